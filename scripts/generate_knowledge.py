#!/usr/bin/env python3
"""Regenerate or extend the ``knowledge`` sentences of the organ vocabulary with an LLM.

Uses an OpenAI-compatible chat-completions endpoint over plain HTTP (urllib, no extra packages):
``OPENAI_API_KEY`` (required unless --dry-run) and ``OPENAI_BASE_URL`` (default
https://api.openai.com/v1). The result is written to a new json file (default
``organs.generated.json`` in the current folder); ``organsam/vocabulary/organs.json`` is only
overwritten with ``--in-place``. Review generated sentences before committing them: they are
anatomical claims used to condition the model.

Examples:
    python scripts/generate_knowledge.py --dry-run --organs liver spleen
    OPENAI_API_KEY=... python scripts/generate_knowledge.py gpt-4o-mini --organs liver -o /tmp/organs.json
    OPENAI_BASE_URL=http://localhost:8000/v1 python scripts/generate_knowledge.py my-model --mode extend
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger("generate_knowledge")

REPO = Path(__file__).resolve().parents[1]
ORGANS_JSON = REPO / "organsam" / "vocabulary" / "organs.json"
MIN_SENTENCES, MAX_SENTENCES = 3, 6

SYSTEM_PROMPT = (
    "You are a radiologist writing short, factual reference notes about anatomy on computed tomography. "
    "Write plain sentences without lists, citations or hedging, and never invent uncertain numbers."
)


def build_prompt(organ: dict, n_sentences: int, mode: str) -> str:
    """User message asking for knowledge sentences about one vocabulary entry."""
    lines = [
        f"Structure: {organ['name']} (id: {organ['id']}, laterality: {organ['laterality']}).",
        f"Write {n_sentences} factual sentences covering: its location in the body, its neighbouring "
        "structures, its shape and size, and its appearance on CT (attenuation in Hounsfield units before "
        "contrast and how it enhances after intravenous contrast).",
    ]
    if organ.get("parts"):
        lines.append(f"It is the union of: {', '.join(organ['parts'])}.")
    if mode == "extend" and organ.get("knowledge"):
        lines.append("Existing sentences (do not repeat them, add new facts):")
        lines.extend(f"- {s}" for s in organ["knowledge"])
    lines.append('Answer with a JSON array of strings only, e.g. ["First sentence.", "Second sentence."].')
    return "\n".join(lines)


def parse_reply(text: str) -> list[str]:
    """The list of sentences in a model reply (a JSON array, possibly inside a code fence).

    Raises:
        ValueError: the reply holds no JSON array of non-empty strings.
    """
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        raise ValueError(f"reply has no JSON array: {text[:200]!r}")
    items = json.loads(text[start : end + 1])
    if not isinstance(items, list) or not all(isinstance(s, str) and s.strip() for s in items):
        raise ValueError(f"reply is not a list of sentences: {text[:200]!r}")
    return [" ".join(s.split()) for s in items]


def chat(base_url: str, api_key: str, model: str, prompt: str, timeout: float, temperature: float) -> str:
    """One chat-completions request; returns the assistant's text.

    Raises:
        RuntimeError: HTTP or network failure, or an unexpected response layout.
    """
    body = json.dumps(
        {
            "model": model,
            "temperature": temperature,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
        }
    ).encode()
    req = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.loads(resp.read().decode())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{req.full_url}: HTTP {e.code}: {e.read()[:300]!r}") from e
    except urllib.error.URLError as e:
        raise RuntimeError(f"{req.full_url}: {e.reason}; check OPENAI_BASE_URL") from e
    try:
        return doc["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise RuntimeError(f"{req.full_url}: unexpected response {str(doc)[:300]}") from e


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="model name at the endpoint (required unless --dry-run)")
    ap.add_argument("--organs", nargs="+", metavar="ID", help="only these organ ids (default: all)")
    ap.add_argument(
        "--mode",
        choices=["replace", "extend"],
        default="replace",
        help=f"replace the sentences, or add new ones after the existing (max {MAX_SENTENCES})",
    )
    ap.add_argument("--sentences", type=int, default=4, help="sentences to ask for (3-6, default 4)")
    ap.add_argument("--input", type=Path, default=ORGANS_JSON, help="vocabulary json to read")
    ap.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("organs.generated.json"),
        help="where to write the result (default: organs.generated.json)",
    )
    ap.add_argument("--in-place", action="store_true", help="overwrite --input instead of writing --output")
    ap.add_argument("--dry-run", action="store_true", help="print the prompts; call nothing, write nothing")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    ap.add_argument("--temperature", type=float, default=0.2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if not MIN_SENTENCES <= args.sentences <= MAX_SENTENCES:
        ap.error(f"--sentences must be between {MIN_SENTENCES} and {MAX_SENTENCES}")
    if not args.input.is_file():
        ap.error(f"vocabulary file {args.input} does not exist")
    doc = json.loads(args.input.read_text(encoding="utf-8"))
    by_id = {o["id"]: o for o in doc["organs"]}
    ids = args.organs or list(by_id)
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        ap.error(f"unknown organ ids {unknown}; run 'organsam organs' for the list")

    if args.dry_run:
        for oid in ids:
            prompt = build_prompt(by_id[oid], args.sentences, args.mode)
            print(f"### {oid}\n[system] {SYSTEM_PROMPT}\n[user] {prompt}\n")
        return 0

    if not args.model:
        ap.error("a model name is required (or use --dry-run)")
    api_key = os.environ.get("OPENAI_API_KEY")
    if not api_key:
        ap.error("set OPENAI_API_KEY (and OPENAI_BASE_URL for a non-OpenAI endpoint), or use --dry-run")
    base_url = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")

    failed = []
    for oid in ids:
        organ = by_id[oid]
        prompt = build_prompt(organ, args.sentences, args.mode)
        try:
            sentences = parse_reply(chat(base_url, api_key, args.model, prompt, args.timeout, args.temperature))
        except (RuntimeError, ValueError) as e:
            logger.error("%s: %s", oid, e)
            failed.append(oid)
            continue
        if args.mode == "extend":
            sentences = list(organ["knowledge"]) + [s for s in sentences if s not in organ["knowledge"]]
        if len(sentences) < MIN_SENTENCES:
            logger.error("%s: only %d sentences returned; kept the old ones", oid, len(sentences))
            failed.append(oid)
            continue
        organ["knowledge"] = sentences[:MAX_SENTENCES]
        logger.info("%s: %d sentences", oid, len(organ["knowledge"]))

    try:  # validate against the package's loader when organsam is importable
        sys.path.insert(0, str(REPO))
        from organsam.vocabulary.vocabulary import vocabulary_from_dict
    except ImportError:
        logger.warning("organsam not importable: the result was not validated")
    else:
        vocabulary_from_dict(doc, source="generated vocabulary")
    out = args.input if args.in_place else args.output
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("wrote %s (%d organs updated, %d failed)", out, len(ids) - len(failed), len(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
