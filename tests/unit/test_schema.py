import pytest

from graviti_dist.crawl.schema import parse_schema
from graviti_dist.errors import GravitiError
from tests.helpers import small_schema
import yaml


def _yaml(schema: dict) -> str:
    return yaml.safe_dump(schema, sort_keys=False)


def test_small_schema_parses_and_round_trips():
    schema = parse_schema(_yaml(small_schema()))
    assert list(schema.node_types) == ["user", "post"]
    assert schema.task("rec").relation == "authored"
    assert parse_schema(schema.to_yaml()) == schema


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s["node_types"]["user"].update(colour="red"), "node_types.user.colour"),
        (lambda s: s["relations"]["follows"].update(src="group"), "unknown node type 'group'"),
        (lambda s: s["node_types"]["user"]["features"].append({"name": "v", "kind": "vector"}), "needs a 'width'"),
        (lambda s: s["tasks"].append({"name": "bot", "type": "binary", "node_type": "user", "label": "bot"}), "used twice"),
        (lambda s: s["tasks"].append({"name": "age", "type": "regression", "node_type": "user", "label": "age"}),
         "label 'age' is not among the labels"),
        (lambda s: s["tasks"].append({"name": "l", "type": "link", "relation": "likes"}), "unknown relation 'likes'"),
        (lambda s: s["tasks"][0].update(type="ranking"), "tasks.0.type"),
        (lambda s: s["relations"]["authored"].update(symmetric=True), "symmetric relation must join one node type"),
        (lambda s: s["tasks"][2].update(name="../../escape"), "task name '../../escape' must be letters"),
        (lambda s: s["tasks"][2].update(name="/tmp/x"), "task name '/tmp/x' must be letters"),
    ],
)
def test_schema_errors_name_the_field(mutate, message):
    schema = small_schema()
    mutate(schema)
    with pytest.raises(GravitiError) as err:
        parse_schema(_yaml(schema), source="crawl/graph.yaml")
    assert "crawl/graph.yaml" in str(err.value)
    assert message in str(err.value)


def test_schema_not_yaml():
    with pytest.raises(GravitiError, match="not valid YAML"):
        parse_schema("node_types: [unclosed", source="g.yaml")
