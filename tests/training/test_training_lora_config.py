"""LoRA options in training configs: ``model.lora_rank`` from YAML, and the feature cache refusing adapters."""

from __future__ import annotations

import pytest
import torch

from organsam.config import ConfigError
from organsam.registry import build_design, resolve_config
from organsam.training.train_config import TrainConfig, load_train_config

YAML = """design: organ_prompts
model:
  lora_rank: 8
  lora_alpha: 16
  lora_targets: [attn.qkv, attn.proj, mlp.fc1]
data:
  feature_cache: false
steps: 2
"""


def test_lora_rank_from_yaml_reaches_the_design_config(tmp_path):
    f = tmp_path / "lora.yaml"
    f.write_text(YAML)
    cfg = load_train_config([f])
    assert cfg.model["lora_rank"] == 8
    design = resolve_config(cfg.design, [cfg.model])
    assert design.lora_rank == 8 and design.lora_alpha == 16
    assert design.lora_targets == ("attn.qkv", "attn.proj", "mlp.fc1")
    # The packaged preset plus a command-line override works the same way.
    over = load_train_config(["train_default"], ["model.lora_rank=4"])
    assert over.design == "unified" and resolve_config(over.design, [over.model]).lora_rank == 4
    assert resolve_config("organ_prompts").lora_rank == 0  # off by default


def test_lora_with_the_feature_cache_is_refused(tmp_path):
    f = tmp_path / "lora.yaml"
    f.write_text(YAML.replace("feature_cache: false", "feature_cache: true"))
    with pytest.raises(ConfigError, match="lora_rank 8 needs data.feature_cache: false"):
        load_train_config([f])
    with pytest.raises(ConfigError, match="model.lora_rank must be an integer >= 0"):
        load_train_config([tmp_path / "lora.yaml"], ["model.lora_rank=-2", "data.feature_cache=false"])


def test_feature_cache_and_trainer_refuse_a_design_with_adapters(tmp_path):
    from organsam.training.feature_cache import FeatureCache
    from organsam.training.trainer import Trainer

    torch.manual_seed(0)
    model = build_design("organ_prompts", [{"lora_rank": 2, "pretrained": False}])
    with pytest.raises(ValueError, match="cannot be used with LoRA adapters.*bypass the adapters"):
        FeatureCache(tmp_path / "cache", model)
    # A LoRA rank that comes from the design config (not the train config's model mapping) is caught too.
    cfg = TrainConfig(design="organ_prompts", out_dir=str(tmp_path / "run"))
    cfg.data.feature_cache = True
    with pytest.raises(ConfigError, match="data.feature_cache cannot be used with model.lora_rank 2"):
        Trainer(cfg)._check_feature_cache(model)
    Trainer(cfg)._check_feature_cache(build_design("organ_prompts", [{"pretrained": False}]))
