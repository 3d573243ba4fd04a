"""Stage 1, the crawl format: schema, Parquet reading, validation, importers, generator.

This package needs neither DGL nor torch (nor Ray, but through ``runtime.ray_cluster`` for
parallel generation): a crawl can be checked anywhere.
"""

from graviti_dist.crawl.generate import generate_crawl
from graviti_dist.crawl.load import Dedupe, load_crawl, load_edge_table, load_node_table
from graviti_dist.crawl.schema import SCHEMA_FILE, CrawlSchema, Relation, load_schema
from graviti_dist.crawl.summary import format_summary, summarize
from graviti_dist.crawl.synthetic import SyntheticSpec, preset_spec
from graviti_dist.crawl.tables import Crawl, LoadReport, NodeTable, TaskLabels

__all__ = ["SCHEMA_FILE", "Crawl", "CrawlSchema", "Dedupe", "LoadReport", "NodeTable", "Relation", "SyntheticSpec",
           "TaskLabels", "format_summary", "generate_crawl", "load_crawl", "load_edge_table", "load_node_table",
           "load_schema", "preset_spec", "summarize"]
