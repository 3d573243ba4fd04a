"""The crawl format: schema, Parquet reading, validation, importers, generator.

This package needs neither DGL nor torch: a crawl can be checked anywhere.
"""

from graviti_dist.crawl.load import load_crawl
from graviti_dist.crawl.schema import CrawlSchema, load_schema
from graviti_dist.crawl.tables import Crawl

__all__ = ["Crawl", "CrawlSchema", "load_crawl", "load_schema"]
