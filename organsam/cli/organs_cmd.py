"""``organsam organs``: list the organ vocabulary, resolve a free-text prompt, show dataset label maps."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "organs",
        help="list the organ vocabulary, or resolve a prompt with --parse",
        description="List the organ vocabulary (id, name, laterality, groups), resolve a free-text prompt "
        "into organ ids, or show a dataset label map.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--group", metavar="NAME", help="only the organs of this group (see --groups)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--parse", metavar="TEXT", help='resolve a prompt, e.g. "liver and both kidneys"')
    what.add_argument("--show", metavar="ID", help="all fields of one organ, knowledge sentences included")
    what.add_argument("--groups", action="store_true", help="list the organ groups")
    what.add_argument("--labelmap", metavar="NAME", help="show a dataset label map (value, class, organ id)")
    what.add_argument("--labelmaps", action="store_true", help="list the packaged dataset label maps")
    p.set_defaults(func=run)


def _parse(args: argparse.Namespace) -> int:
    from organsam.vocabulary import UnknownOrganError, parse_prompt

    try:
        ids = parse_prompt(args.parse)
    except UnknownOrganError as e:
        if not args.json:
            raise
        print(
            json.dumps({"prompt": args.parse, "error": str(e), "term": e.term, "suggestions": e.suggestions}, indent=2)
        )
        return 2
    except ValueError as e:
        if not args.json:
            raise
        print(json.dumps({"prompt": args.parse, "error": str(e), "term": None, "suggestions": []}, indent=2))
        return 2
    if args.json:
        print(json.dumps({"prompt": args.parse, "ids": ids}, indent=2))
    else:
        print("\n".join(ids))
    return 0


def _labelmap(args: argparse.Namespace) -> int:
    from organsam.vocabulary import labelmap_info

    lm = labelmap_info(args.labelmap)
    if args.json:
        print(
            json.dumps(
                {
                    "name": lm.name,
                    "title": lm.title,
                    "modality": lm.modality,
                    "source": lm.source,
                    "labels": {str(v): {"label": lm.labels[v], "organ": lm.organs[v]} for v in lm.labels},
                },
                indent=2,
            )
        )
    else:
        print(f"# {lm.title} [{lm.name}]: {lm.description}")
        for v in sorted(lm.labels):
            print(f"{v:>4}  {lm.labels[v]:<32} {lm.organs[v] or '-'}")
    return 0


def _group_name(vocab, name: str) -> str:
    """A group name from its name or one of its aliases ("chest" -> "thorax"); unknown names pass through."""
    key = name.strip().lower().replace("-", "_")
    for g in vocab.groups.values():
        if key == g.name or key.replace("_", " ") in g.aliases:
            return g.name
    return name


def run(args: argparse.Namespace) -> int:
    from organsam.vocabulary import list_labelmaps, load_vocabulary

    vocab = load_vocabulary()
    if args.parse is not None:
        return _parse(args)
    if args.labelmap is not None:
        return _labelmap(args)
    if args.labelmaps:
        names = list_labelmaps()
        print(json.dumps(names, indent=2) if args.json else "\n".join(names))
        return 0
    if args.show is not None:
        organ = vocab[args.show]
        if args.json:
            print(json.dumps({**organ.to_dict(), "prompt": organ.prompt_text}, indent=2))
        else:
            d = organ.to_dict()
            for key in ("id", "name", "label_value", "color", "laterality", "pair", "groups", "parts", "synonyms"):
                val = d[key]
                shown = ", ".join(str(v) for v in val) if isinstance(val, list) else val
                print(f"{key + ':':<12} {shown or '-'}")
            print(f"{'prompt:':<12} {organ.prompt_text}")
            print(f"{'knowledge:':<12} {organ.knowledge_text}")
        return 0
    if args.groups:
        rows = [
            {
                "name": g.name,
                "title": g.title,
                "organs": len(vocab.group(g.name)),
                "aliases": list(g.aliases),
                "description": g.description,
            }
            for g in vocab.groups.values()
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['name']:<15} {r['organs']:>3}  {r['description']}")
        return 0
    ids = vocab.group(_group_name(vocab, args.group)) if args.group else vocab.ids()
    organs = [vocab[i] for i in ids]
    if args.json:
        print(
            json.dumps(
                {
                    "version": vocab.version,
                    "organs": [
                        {
                            "id": o.id,
                            "name": o.name,
                            "laterality": o.laterality,
                            "label_value": o.label_value,
                            "color": list(o.color or ()),
                            "groups": list(o.groups),
                        }
                        for o in organs
                    ],
                },
                indent=2,
            )
        )
    else:
        for o in organs:
            print(f"{o.id:<30} {o.name:<32} {o.label_value!s:>5}  {o.laterality:<10} {','.join(o.groups) or '-'}")
    return 0
