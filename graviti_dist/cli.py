"""The ``graviti`` command: parse arguments, call one function, report.

User errors (GravitiError) print one clear paragraph and exit 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from graviti_dist.errors import FieldError, GravitiError
from graviti_dist.runtime.output import check_output


def _cmd_import(args: argparse.Namespace) -> None:
    from graviti_dist.crawl import importers

    if args.format == "twitch":
        importers.import_twitch(args.folders, args.out, overwrite=args.overwrite, dedupe=args.dedupe)
    elif args.format == "nba":
        counts = importers.import_nba(args.folder, args.out, overwrite=args.overwrite, dedupe=args.dedupe)
        if counts["dropped_unknown_follows"]:
            print(f"dropped {counts['dropped_unknown_follows']} follow lines whose ids have no player row")
    else:
        importers.import_edgelist(
            args.edges, args.out, nodes_path=args.nodes, src_col=args.src_col, dst_col=args.dst_col,
            id_col=args.id_col, labels=importers.edgelist.parse_label_specs(args.label), symmetric=args.symmetric,
            node_type=args.node_type, relation=args.relation, delimiter=args.delimiter, overwrite=args.overwrite,
            dedupe=args.dedupe,
        )
    print(f"wrote crawl {args.out}; check it with: graviti inspect {args.out}")


def _cmd_inspect(args: argparse.Namespace) -> None:
    from graviti_dist.crawl import format_summary, load_crawl, summarize

    if args.json:  # an output: its folder is made (or refused) before the crawl is read, not after
        check_output(Path(args.json).absolute(), overwrite=True, field="json")
    crawl = load_crawl(args.crawl, dedupe=args.dedupe, drop_dangling=args.drop_dangling)
    summary = summarize(crawl)
    print(format_summary(summary))
    if not args.no_graph:
        from graviti_dist.partition import build_graph  # the DGL graph is the partition stage's

        graph = build_graph(crawl)
        summary["dgl_graph"] = {"num_nodes": graph.num_nodes(), "num_edges": graph.num_edges(),
                                "edge_types": [list(e) for e in graph.canonical_etypes]}
        print(f"\nDGL graph: {graph.num_nodes():,} nodes, {graph.num_edges():,} message-passing edges "
              f"(both directions) in {len(graph.canonical_etypes)} edge types")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


def _cmd_generate(args: argparse.Namespace) -> None:
    from graviti_dist.crawl import generate_crawl, preset_spec

    if args.shard_rows < 1:
        raise FieldError("shard_rows", f"must be at least 1, got {args.shard_rows}")
    try:
        spec = preset_spec(args.preset, args.users, posts_per_user=args.posts_per_user, seed=args.seed)
    except ValueError as exc:
        raise GravitiError(f"invalid generator arguments: {exc}") from None
    result = generate_crawl(args.out, spec, shard_rows=args.shard_rows, overwrite=args.overwrite,
                            parallel=args.parallel, address=args.address)
    print(f"wrote crawl {args.out}: {spec.users:,} users, {result['rows']['nodes/post']:,} posts, "
          f"{result['edges']:,} edges in {result['seconds']:.1f}s")


def _cmd_demo(args: argparse.Namespace) -> None:
    from graviti_dist.demo import run_demo

    run_demo(args.out, users=args.users, epochs=args.epochs, overwrite=args.overwrite)


def _cmd_partition(args: argparse.Namespace) -> None:
    from graviti_dist.partition import PartitionSpec, check_partitions, partition_crawl

    if args.check is not None:
        result = check_partitions(args.check, crawl_dir=args.crawl)
        print(f"{args.check}: OK - {result['parts']} parts, {result['nodes']:,} nodes, {result['edges']:,} edges; "
              f"checked {', '.join(result['checked'])} (halo depth {result['halo_hops']})")
        return
    if args.crawl is None or args.out is None or args.num_parts is None:
        raise GravitiError("partition needs CRAWL, --out and --num-parts (or --check PARTITION_DIR)")
    try:
        split = tuple(float(x) for x in args.split.split(","))
    except ValueError:
        raise FieldError("split", f"must be three comma-separated fractions, e.g. 0.8,0.1,0.1; got {args.split!r}") from None
    spec = PartitionSpec(num_parts=args.num_parts, method=args.method, num_hops=args.num_hops,
                         balance_train=args.balance_train, split=split, split_by=args.split_by, seed=args.seed, num_actors=args.num_actors,
                         executor=args.executor, metis_mode=args.metis_mode)
    report = partition_crawl(args.crawl, args.out, spec, address=args.address, overwrite=args.overwrite,
                             dedupe=args.dedupe, drop_dangling=args.drop_dangling)
    print(f"wrote {args.out}: {report['num_parts']} parts of {report['num_nodes']:,} nodes / {report['num_edges']:,} edges; "
          f"edge cut {report['edge_cut_fraction']:.1%}, node balance {report['nodes']['max_over_mean']}, "
          f"halo replication {report['halo_replication']}x; stages "
          + ", ".join(f"{k} {v:.1f}s" for k, v in report["seconds"].items()))


def _cmd_train(args: argparse.Namespace) -> None:
    from graviti_dist.train import RunDir, fit, load_train_config

    config = load_train_config(args.config, args.set)
    metrics = fit(config, address=args.address, overwrite=args.overwrite, resume=args.resume)
    print(f"run directory: {config.out}")
    print(RunDir(config.out).test_table() or json.dumps(metrics, indent=2))


def _cmd_tune(args: argparse.Namespace) -> None:
    from graviti_dist.train import StudyDir, load_search_space, load_train_config, run_study

    base = load_train_config(args.config, args.set).model_dump(mode="json", exclude_defaults=True)
    space = load_search_space(args.search, base)
    rows = run_study(base, space, args.out, args.trials, grace_epochs=args.grace_epochs, address=args.address,
                     overwrite=args.overwrite)
    study = StudyDir(args.out)
    print(study.summary_md.read_text(), end="")
    print(f"best: trial {rows[0]['trial']}; its config: {study.best_config} (graviti train {study.best_config})")


def _cmd_infer(args: argparse.Namespace) -> None:
    from graviti_dist.infer import run_inference

    summary = run_inference(args.run, args.partitions, args.out, executor=args.executor, address=args.address,
                            num_actors=args.num_actors, threads_per_actor=args.threads_per_actor, device=args.device,
                            overwrite=args.overwrite, top_k=args.top_k, select=args.select, explain=args.explain)
    rows = ", ".join(f"{n:,} {t}" for t, n in summary["rows"].items())
    exchange = ", partitions exchanging halo rows per layer" if summary["halo_exchange"] else ""
    print(f"wrote {args.out}: predictions for {rows} ({', '.join(t['name'] for t in summary['tasks'])}) "
          f"in {summary['seconds']:.1f}s{exchange}")


def _cmd_serve(args: argparse.Namespace) -> None:
    from graviti_dist.infer import run_server

    run_server(args.run, args.partitions, host=args.host, port=args.port, max_ids=args.max_ids, device=args.device,
               token_file=args.token_file, read_timeout=args.read_timeout, select=args.select, explain_max=args.explain_max)


def _cmd_bench(args: argparse.Namespace) -> None:
    from benchmarks import suite  # an installed package beside graviti_dist (setup.cfg)

    suite.main(suite.parser().parse_args(args.bench_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graviti", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="convert a public or plain dataset into a crawl")
    fmt = imp.add_subparsers(dest="format", required=True)
    tw = fmt.add_parser("twitch", help="MUSAE Twitch language folders (e.g. twitch/ENGB twitch/PTBR)")
    tw.add_argument("folders", nargs="+", type=Path)
    nba = fmt.add_parser("nba", help="FairGNN NBA folder (nba.csv + nba_relationship.txt)")
    nba.add_argument("folder", type=Path)
    el = fmt.add_parser("edgelist", help="a CSV/Parquet edge list with an optional node table")
    el.add_argument("edges", type=Path)
    el.add_argument("--nodes", type=Path, help="node table: an id column, numeric features, label columns")
    el.add_argument("--src-col", default="src")
    el.add_argument("--dst-col", default="dst")
    el.add_argument("--id-col", default="id")
    el.add_argument("--label", action="append", default=[], metavar="COLUMN:TYPE",
                    help="a label column and its task type (binary, multiclass, regression); repeatable")
    el.add_argument("--symmetric", action="store_true", help="each row is an undirected edge")
    el.add_argument("--node-type", default="node")
    el.add_argument("--relation", default="edge")
    el.add_argument("--delimiter", default=",")
    for p in (tw, nba, el):
        p.add_argument("--out", type=Path, required=True, help="crawl directory to create")
        p.add_argument("--overwrite", action="store_true", help="replace an existing crawl at --out")
        p.add_argument("--dedupe", choices=["error", "first"], default="error",
                       help="a node the source lists twice: refuse (default) or keep its first row")
    imp.set_defaults(func=_cmd_import)

    ins = sub.add_parser("inspect", help="validate a crawl and print its summary")
    ins.add_argument("crawl", type=Path)
    ins.add_argument("--dedupe", choices=["error", "first"], default="error",
                     help="duplicate node ids: fail (default) or keep the first row")
    ins.add_argument("--drop-dangling", action="store_true", help="drop edges whose endpoint has no node row")
    ins.add_argument("--no-graph", action="store_true", help="skip building the DGL graph")
    ins.add_argument("--json", type=Path, help="also write the summary as JSON")
    ins.set_defaults(func=_cmd_inspect)

    gen = sub.add_parser("generate", help="write a synthetic social crawl of any size")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--users", type=int, help="number of users (~41 edges each with the defaults)")
    gen.add_argument("--preset", choices=["small", "medium", "large"],
                     help="small: 2k users (~80k edges); medium: 50k (~2M); large: 2M (~80M)")
    gen.add_argument("--posts-per-user", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--shard-rows", type=int, default=1_000_000, help="rows per Parquet shard")
    gen.add_argument("--parallel", action="store_true", help="generate blocks as Ray tasks on a local Ray")
    gen.add_argument("--address", help="Ray cluster address (implies --parallel; --out must be shared)")
    gen.add_argument("--overwrite", action="store_true")
    gen.set_defaults(func=_cmd_generate)

    part = sub.add_parser("partition", help="partition a crawl into DGL-format partitions (Ray actors + METIS)")
    part.add_argument("crawl", type=Path, nargs="?", help="crawl directory")
    part.add_argument("--out", type=Path, help="partition set to create, e.g. partitions/NAME")
    part.add_argument("--num-parts", type=int)
    part.add_argument("--method", choices=["metis", "random"], default="metis",
                      help="random: for graphs larger than METIS fits in memory")
    part.add_argument("--metis-mode", choices=["recursive", "k-way"], default="recursive",
                      help="recursive bisection (default: the same parts on every run) or k-way (lower edge cut on "
                           "some graphs, but DGL's METIS gives a different assignment run to run)")
    part.add_argument("--num-hops", type=int, default=2, help="halo depth (default 2 = the default model's GAT layers)")
    part.add_argument("--balance-train", action=argparse.BooleanOptionalAction, default=True,
                      help="balance labelled training nodes across parts as well as node types and edges")
    part.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions per task")
    part.add_argument("--split-by", choices=["node", "task"], default="node",
                      help="node (default): a node is in the same split for every task it is labelled for (the "
                           "fractions hold in expectation); task: each task draws exact fractions of its own nodes")
    part.add_argument("--seed", type=int, default=0)
    part.add_argument("--address", help="Ray cluster address (with --executor ray and no address: a local Ray)")
    part.add_argument("--num-actors", type=int, help="writer actors (default: one per CPU, at most one per part)")
    part.add_argument("--executor", choices=["auto", "ray", "local"], default="auto",
                      help="ray: Ray tasks and actors (--address, else a local Ray); local: this process with threads, "
                           "no Ray; auto (default): ray when there is a cluster (--address or RAY_ADDRESS, as in "
                           "`ray job submit`), else local, which is faster and leaner on one machine")
    part.add_argument("--dedupe", choices=["error", "first"], default="error")
    part.add_argument("--drop-dangling", action="store_true")
    part.add_argument("--overwrite", action="store_true")
    part.add_argument("--check", type=Path, metavar="PARTITION_DIR", help="verify a partition set instead")
    part.set_defaults(func=_cmd_partition)

    tr = sub.add_parser("train", help="multi-task GAT training on Ray Train workers with DDP")
    tr.add_argument("config", type=Path, nargs="?", help="training config YAML (see launch/train.example.yaml); "
                    "without one, the defaults and --set overrides (partitions=... at least)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting, e.g. model.hidden=32")
    tr.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    tr.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in the same out")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in out from its newest checkpoint (raise epochs with --set epochs=N)")
    tr.set_defaults(func=_cmd_train)

    tn = sub.add_parser("tune", help="hyper-parameter search over training settings on Ray Tune (ASHA early stopping)")
    tn.add_argument("config", type=Path, nargs="?", help="the base training config YAML (the first trial trains it as is)")
    tn.add_argument("--search", type=Path, required=True,
                    help="YAML: setting -> {choice: [...]} | {uniform: [lo, hi]} | {loguniform: [lo, hi]} | {randint: [lo, hi]}")
    tn.add_argument("--trials", type=int, default=8, help="trials, the base config included (default 8)")
    tn.add_argument("--out", type=Path, default=Path("studies/study"), help="the study directory (default studies/study)")
    tn.add_argument("--grace-epochs", type=int, default=1, help="epochs every trial gets before ASHA may stop it (default 1)")
    tn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base setting")
    tn.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    tn.add_argument("--overwrite", action="store_true", help="replace an earlier study in --out")
    tn.set_defaults(func=_cmd_tune)

    demo = sub.add_parser("demo", help="the main job on an embedded default: a small synthetic crawl end to end")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the demo writes (default runs/demo)")
    demo.add_argument("--users", type=int, default=2000)
    demo.add_argument("--epochs", type=int, default=4)
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo's output")
    demo.set_defaults(func=_cmd_demo)

    inf = sub.add_parser("infer", help="batch predictions for every node to Parquet (full neighbourhoods, Ray actors)")
    inf.add_argument("run", type=Path, help="a graviti train run directory, or a checkpoint (file or folder) inside one")
    inf.add_argument("--partitions", type=Path, required=True, help="the partition set the run was trained on")
    inf.add_argument("--out", type=Path, required=True)
    inf.add_argument("--executor", choices=["ray", "local"], default="ray",
                     help="ray: one actor per partition (local Ray or --address); local: this process")
    inf.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    inf.add_argument("--num-actors", type=int, help="default: one per partition, at most one per CPU (a set whose halo "
                     "is shallower than the model always takes one per partition: they exchange halo rows per layer)")
    inf.add_argument("--threads-per-actor", type=int, default=1,
                     help="torch threads per actor; results are bitwise the same for the same value (default 1)")
    inf.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    inf.add_argument("--top-k", type=int, default=10, help="recommendations per source node for each link task "
                     "(0: none; exact top-k over every destination, in this process)")
    inf.add_argument("--overwrite", action="store_true")
    inf.add_argument("--select", choices=["per_task", "summed"], default="per_task",
                     help="per_task (default): each node task from the weights of its own best validation epoch; "
                          "summed: every task from the run's one best model (lowest summed validation loss)")
    inf.add_argument("--explain", type=int, default=0, metavar="K",
                     help="also write each node's K most attended in-neighbours (last-layer attention) to "
                          "OUT/explanations/<node type>/ (default 0: none)")
    inf.set_defaults(func=_cmd_infer)

    srv = sub.add_parser("serve", help="online multi-task predictions over HTTP (FastAPI + uvicorn)")
    srv.add_argument("run", type=Path, help="a graviti train run directory, or a checkpoint inside one")
    srv.add_argument("--partitions", type=Path, required=True)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--max-ids", type=int, default=1024, help="most ids one /predict request may ask for")
    srv.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    srv.add_argument("--select", choices=["per_task", "summed"], default="per_task",
                     help="per_task (default): each node task from the weights of its own best validation epoch; "
                          "summed: every task from the run's one best model (lowest summed validation loss)")
    srv.add_argument("--explain-max", type=int, default=10,
                     help="most neighbours a request's \"explain\" may ask for; kept per node at start-up "
                          "(about 28 bytes each), 0 for none (default 10)")
    srv.add_argument("--read-timeout", type=float, default=10.0,
                     help="seconds a client has to send a whole request before it is disconnected (default 10)")
    srv.add_argument("--token-file", help="require 'Authorization: Bearer TOKEN' (the file's content; default: "
                                          "GRAVITI_SERVE_TOKEN if set, else no token)")
    srv.set_defaults(func=_cmd_serve)

    bench = sub.add_parser("bench", add_help=False, help="trainer throughput on CPU or CUDA next to plain DGL and PyG "
                                                         "(graviti bench --help for its options)")
    bench.set_defaults(func=_cmd_bench)  # its options are parsed by benchmarks/suite.py
    return parser


def _flag_words(exc: GravitiError, parser: argparse.ArgumentParser, command: str) -> str:
    """The error's message, with a field the command has a flag for named as that flag
    (``num_parts must be...`` -> ``--num-parts must be...``); the library speaks in field names."""
    options = _options(parser, command)

    def as_flag(name: str) -> str | None:
        flag = "--" + name.replace("_", "-")
        return flag if flag in options else None

    # "pass overwrite to replace it" names a switch by its field too: spell it as the flag.
    text = re.sub(r"\b(pass|or) ([a-z_]+) to\b", lambda m: f"{m[1]} {as_flag(m[2]) or m[2]} to",
                  exc.text if isinstance(exc, FieldError) else str(exc))
    if not isinstance(exc, FieldError):
        return text
    flag = as_flag(exc.field)
    return f"{flag or exc.field} {text}"


def _options(parser: argparse.ArgumentParser, command: str | None = None) -> set[str]:
    """Option strings of ``command``'s parser (all of them when None) and of its nested subcommands."""
    options = {o for action in parser._actions for o in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if command is None or name == command:
                    options |= _options(sub)
    return options


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Our own progress at INFO; other libraries (DGL logs every file it loads) only at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("graviti_dist").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.func(args)
    except GravitiError as exc:
        print(f"graviti {args.command}: error: {_flag_words(exc, parser, args.command)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
