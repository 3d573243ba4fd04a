"""Importers that turn public or plain formats into our crawl format."""

from graviti_dist.crawl.importers.edgelist import import_edgelist
from graviti_dist.crawl.importers.nba import import_nba
from graviti_dist.crawl.importers.twitch import import_twitch

__all__ = ["import_edgelist", "import_nba", "import_twitch"]
