"""The two checks around CI's asv run (.ci/run): a throw-away config, and one graph per benchmark.

``python ci.py config OUT BRANCH``
    Writes ``OUT/asv.conf.json``: this folder's ``asv.conf.json`` with absolute
    paths for the repository and the benchmarks, the results, the site and
    asv's environments under ``OUT``, and ``branches = [BRANCH]`` (the branch
    checked out, or ``HEAD``), so that ``asv publish`` finds the commit that
    ``asv run --set-commit-hash`` saved on a branch and graphs it.
``python ci.py graphs OUT``
    Exits with status 1 unless ``asv publish`` wrote, under ``OUT/html/graphs``,
    a graph (a JSON series, one value per ``n_classes``) for each benchmark of
    ``OUT/results/benchmarks.json``; prints the graph files otherwise.

Run from this folder (``cd asv_benchmarks``), with asv installed.
"""

from __future__ import annotations

import json
import os
import sys


def write_config(out, branch, source="asv.conf.json"):
    """``source`` with its paths made absolute or moved under ``out``; returns the new config's path."""
    from asv.util import load_json  # asv.conf.json has // comments

    conf = load_json(source, js_comments=True)
    here = os.path.dirname(os.path.abspath(source))
    conf.update(
        repo=os.path.normpath(os.path.join(here, conf["repo"])),
        benchmark_dir=os.path.join(here, conf["benchmark_dir"]),
        branches=[branch],
        env_dir=os.path.join(out, "env"),
        results_dir=os.path.join(out, "results"),
        html_dir=os.path.join(out, "html"),
    )
    path = os.path.join(out, "asv.conf.json")
    with open(path, "w") as f:
        json.dump(conf, f, indent=2)
    return path


def graph_files(out):
    """``{benchmark: [graph files]}`` of the site ``OUT/html`` for every benchmark in ``OUT/results``.

    A benchmark's graphs are ``graphs/<machine and environment>/<name>.json``,
    one per branch, machine and environment (``graphs/summary/`` is the
    front page's, not counted).
    """
    with open(os.path.join(out, "results", "benchmarks.json")) as f:
        names = sorted(name for name in json.load(f) if name != "version")
    graphs = {name: [] for name in names}
    root = os.path.join(out, "html", "graphs")
    for folder, _, files in os.walk(root):
        if os.path.relpath(folder, root).split(os.sep)[0] == "summary":
            continue
        for file in files:
            name = file[: -len(".json")]
            if name in graphs:
                graphs[name].append(os.path.relpath(os.path.join(folder, file), os.path.join(out, "html")))
    return graphs


def main(argv):
    if len(argv) == 3 and argv[0] == "config":
        print(write_config(argv[1], argv[2]))
        return 0
    if len(argv) == 2 and argv[0] == "graphs":
        graphs = graph_files(argv[1])
        missing = [name for name, files in graphs.items() if not files]
        if missing or not graphs:
            print(f"asv publish wrote no graph for: {', '.join(missing) or 'any benchmark'}", file=sys.stderr)
            return 1
        for name in graphs:
            print("\n".join(sorted(graphs[name])))
        print(f"asv publish: graphs of all {len(graphs)} benchmarks under {os.path.join(argv[1], 'html')}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
