"""Organ vocabulary, dataset label maps and the free-text prompt parser (pure Python: no torch/numpy).

>>> from organsam.vocabulary import load_vocabulary, parse_prompt, load_labelmap
>>> parse_prompt("liver and both kidneys")
['liver', 'kidney_right', 'kidney_left']
>>> load_labelmap("amos22")[3]
'kidney_left'
"""

from organsam.vocabulary.labelmaps import (
    LabelMap,
    labelmap_from_json,
    labelmap_info,
    list_labelmaps,
    load_labelmap,
)
from organsam.vocabulary.parse import PromptError, UnknownOrganError, parse_prompt, suggest
from organsam.vocabulary.vocabulary import (
    DEFAULT_GROUP,
    PROMPT_TEMPLATE,
    VOCAB_VERSION,
    Group,
    Organ,
    UnknownIdError,
    Vocabulary,
    VocabularyError,
    knowledge_text,
    load_vocabulary,
    prompt_text,
    read_vocabulary,
)

__all__ = [
    "DEFAULT_GROUP",
    "PROMPT_TEMPLATE",
    "VOCAB_VERSION",
    "Group",
    "LabelMap",
    "Organ",
    "PromptError",
    "UnknownIdError",
    "UnknownOrganError",
    "Vocabulary",
    "VocabularyError",
    "knowledge_text",
    "labelmap_from_json",
    "labelmap_info",
    "list_labelmaps",
    "load_labelmap",
    "load_vocabulary",
    "parse_prompt",
    "prompt_text",
    "read_vocabulary",
    "suggest",
]
