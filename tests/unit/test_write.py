import pyarrow as pa
import pytest

from graviti_dist.crawl.schema import parse_schema
from graviti_dist.crawl.write import CrawlWriter
from graviti_dist.crawl.load import load_crawl
from graviti_dist.errors import GravitiError
import yaml
from tests.helpers import small_schema, small_tables


def test_writer_publishes_only_when_complete(tmp_path):
    schema = parse_schema(yaml.safe_dump(small_schema()))
    nodes, edges = small_tables()
    out = tmp_path / "crawl"
    with pytest.raises(RuntimeError):
        with CrawlWriter(out, schema) as w:
            w.write_nodes("user", nodes["user"][0])
            raise RuntimeError("died half way")
    assert list(tmp_path.iterdir()) == []
    with CrawlWriter(out, schema) as w:
        for t, tables in nodes.items():
            w.write_nodes(t, tables[0])
        for r, tables in edges.items():
            w.write_edges(r, tables[0])
    assert len(load_crawl(out).nodes["user"]) == 4
    with pytest.raises(GravitiError, match="already exists"):
        CrawlWriter(out, schema)
    with CrawlWriter(out, schema, overwrite=True) as w:  # replacing keeps the old crawl until the new one is done
        for t, tables in nodes.items():
            w.write_nodes(t, tables[0].slice(0, 2) if t == "user" else tables[0])
        for r, tables in edges.items():
            w.write_edges(r, tables[0].filter(pa.array([True, False, False, False] if r == "follows" else [True] * 3)))
    assert len(load_crawl(out).nodes["user"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["crawl"]
