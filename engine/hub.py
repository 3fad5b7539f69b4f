"""`resolve_model_path`: what `--model` names, a local checkpoint or PEFT adapter directory or a Hugging Face Hub
id, as a directory.

Owns: telling a local path from a Hub id (`org/name`, optionally with `@revision`; a bare `name` is always a local
path, so a mistyped directory is named as missing rather than looked up on the Hub), telling a checkpoint
(config.json) from a PEFT adapter (adapter_config.json; a directory holding both is an adapter, as
`engine.model.load_pretrained` reads it), and turning an id into the snapshot directory of huggingface_hub's
cache, downloading only the files wgrpo reads. Where the cache is
and whether the Hub may be reached are huggingface_hub's to decide (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE): they
are read here only to name the cache in a message. huggingface_hub is an optional dependency, imported only when
an id is resolved. Host-only: must not import wgpu, torch, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from wgrpo.engine.errors import InputError
from wgrpo.engine.json_file import read_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"  # PEFT's
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# everything but the weights; the weights follow once the config files say whether it is a checkpoint or an
# adapter and the index which shards there are, so that other *.safetensors files of a repo (consolidated copies,
# a checkpoint's adapter weights without adapter_config.json, variants in subfolders) are never fetched
METADATA_FILES = (CONFIG_FILE, ADAPTER_CONFIG_FILE, "generation_config.json", INDEX_FILE, "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
_NEITHER = f"neither {CONFIG_FILE} nor {ADAPTER_CONFIG_FILE}"
INSTALL_HINT = "pip install 'wgrpo[hub]'"

_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"  # huggingface_hub's rule for either part of an id
_HUB_ID = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[^\s@]+))?")


def resolve_model_path(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """The checkpoint or PEFT adapter directory that `name_or_path` names: one holding config.json or
    adapter_config.json.

    An existing directory is returned as is, even when its name is also a Hub id. Otherwise a string that reads
    as a Hub id (`Qwen/Qwen2.5-0.5B-Instruct`, `openai-community/gpt2`, `org/name@v1.0`; `revision` is the same
    as `@...`) is
    resolved through huggingface_hub: from its cache, downloading what is missing unless it is offline. An
    `os.PathLike` is always a local path. Every failure is one InputError line: a path that does not exist, an id
    the Hub does not have or will not give, a model missing from the cache while offline, a directory or repo
    holding neither config.json nor adapter_config.json, huggingface_hub not installed. Says on stderr where a Hub
    model's files are.
    """
    path, named = Path(name_or_path), os.fspath(name_or_path)  # messages say what was typed: ./foo, not foo
    if not named:
        raise InputError("empty model name: expected a checkpoint directory or a Hugging Face Hub id")
    if path.is_dir():
        if revision is not None:
            raise InputError(f"{named}: a local directory; revision {revision!r} applies only to a Hugging Face Hub id")
        if not any((path / name).is_file() for name in (CONFIG_FILE, ADAPTER_CONFIG_FILE)):
            raise InputError(f"{named}: a directory with {_NEITHER}: expected a checkpoint directory (config.json, "
                             f"model.safetensors) or a PEFT adapter directory (adapter_config.json, "
                             f"adapter_model.safetensors)")
        return path
    if path.exists():
        raise InputError(f"{named}: a file; expected a checkpoint directory (config.json, model.safetensors), a PEFT "
                         f"adapter directory (adapter_config.json) or a Hugging Face Hub id")
    hub_id = _HUB_ID.fullmatch(name_or_path) if isinstance(name_or_path, str) else None
    if hub_id is None or _not_an_id(hub_id["repo"]):
        raise InputError(f"{named}: no such directory (expected a checkpoint directory or a Hugging Face Hub id "
                         f"such as Qwen/Qwen2.5-0.5B-Instruct)")
    repo_id, at = hub_id["repo"], hub_id["revision"]
    if revision is not None and at is not None and revision != at:
        raise InputError(f"{name_or_path}: names revision {at!r}, but revision {revision!r} was given as well")
    return _resolve_hub_id(_HubModel(repo_id, revision if revision is not None else at))


def is_hub_id(name: str | os.PathLike) -> bool:
    """Whether `resolve_model_path` would look `name` up on the Hub: a string that reads as an id and names nothing
    on disk."""
    if not isinstance(name, str) or not name or Path(name).exists():
        return False
    hub_id = _HUB_ID.fullmatch(name)
    return hub_id is not None and not _not_an_id(hub_id["repo"])


def _not_an_id(repo_id: str) -> bool:
    """What huggingface_hub refuses beyond the characters: `--` and `..` anywhere, a `.git` ending."""
    return "--" in repo_id or ".." in repo_id or repo_id.endswith(".git")


@dataclass(frozen=True)
class _HubModel:
    repo_id: str
    revision: str | None  # None: the repo's default branch

    @property
    def label(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"

    @property
    def download_command(self) -> str:
        return f"hf download {self.repo_id}" + ("" if self.revision is None else f" --revision {self.revision}")


def _resolve_hub_id(model: _HubModel) -> Path:
    try:
        import huggingface_hub
    except ImportError:
        raise InputError(f"{model.label}: not a local directory, and reading a Hugging Face Hub model needs "
                         f"huggingface_hub: {INSTALL_HINT}, or pass a local checkpoint directory") from None
    partial = None  # the snapshot directory, once its small files are there
    try:
        partial = Path(huggingface_hub.snapshot_download(model.repo_id, revision=model.revision,
                                                         allow_patterns=list(METADATA_FILES)))
        _require(model, partial, (CONFIG_FILE, ADAPTER_CONFIG_FILE), "not a transformers checkpoint or PEFT "
                 "adapter", missing=_NEITHER)
        adapter = (partial / ADAPTER_CONFIG_FILE).is_file()
        # by commit, so that a branch that moves between the two calls cannot mix two commits' files
        snapshot = Path(huggingface_hub.snapshot_download(
            model.repo_id, revision=partial.name,
            allow_patterns=[ADAPTER_WEIGHTS_FILE] if adapter else _weight_files(partial)))
    except Exception as error:
        message = _hub_error_message(model, error, partial)
        if message is None:  # not about the model (a proxy failure, the Hub failing mid-download): a traceback
            raise
        raise InputError(message) from None
    if adapter:
        _require(model, snapshot, (ADAPTER_WEIGHTS_FILE,),
                 "wgrpo reads safetensors adapter weights only (adapter_model.bin is not read)")
    else:
        _require(model, snapshot, (WEIGHTS_FILE, INDEX_FILE),
                 "wgrpo reads safetensors weights only (pytorch_model.bin is not read)")
    print(f"wgrpo: {'adapter' if adapter else 'model'} {model.label} from {snapshot}", file=sys.stderr)
    return snapshot


def _require(model: _HubModel, snapshot: Path, names: tuple[str, ...], otherwise: str,
             missing: str | None = None) -> None:
    """InputError unless the snapshot holds one of `names`; `missing` says which are absent (default: no ...)."""
    if not any((snapshot / name).is_file() for name in names):
        missing = missing or f"no {' or '.join(names)}"
        raise InputError(f"{model.label}: {snapshot} has {missing}: {otherwise}, or this is a partial download "
                         f"(`{model.download_command}` completes it)")


def _weight_files(snapshot: Path) -> list[str]:
    """model.safetensors and the shards that the snapshot's index names (file names beside it, as they must be)."""
    names = [WEIGHTS_FILE]
    if (snapshot / INDEX_FILE).is_file():
        index = read_json(snapshot / INDEX_FILE)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if isinstance(weight_map, dict):
            names += sorted({s for s in weight_map.values() if isinstance(s, str) and Path(s).name == s})
    return names


def _hub_error_message(model: _HubModel, error: BaseException, partial: Path | None = None) -> str | None:
    """The one line for an error of huggingface_hub's about the model; None for any other error. `partial`: the
    snapshot directory, when its small files were found before the error."""
    from huggingface_hub import constants, errors

    label, log_in = model.label, "log in (`hf auth login` or HF_TOKEN) with an account that may read it"
    if isinstance(error, errors.GatedRepoError):  # before RepositoryNotFoundError, its base class
        return (f"{label}: a gated model on the Hugging Face Hub: ask for access at "
                f"https://huggingface.co/{model.repo_id}, then {log_in}")
    if isinstance(error, errors.RepositoryNotFoundError):
        return f"{label}: no such model on the Hugging Face Hub, or a private one: check the id, or {log_in}"
    if isinstance(error, errors.RevisionNotFoundError):
        return f"{label}: the Hugging Face Hub model {model.repo_id} has no revision {model.revision!r}"
    if isinstance(error, errors.DisabledRepoError):
        return f"{label}: this Hugging Face Hub model has been disabled by its owner"
    if isinstance(error, errors.HfHubHTTPError) and _status(error) == 401:
        return f"{label}: the Hugging Face Hub refused the request (401 Unauthorized): {log_in}"
    if isinstance(error, errors.HFValidationError):
        return f"{label}: no such directory, nor a valid Hugging Face Hub id ({error})"
    if not isinstance(error, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return None
    # missing from the cache, and the Hub not asked or not answering: snapshot_download chains the Hub's answer
    partial = getattr(error, "snapshot_path", partial)  # IncompleteSnapshotError's
    cause = error.__cause__
    if isinstance(cause, errors.HfHubHTTPError):
        return (_hub_error_message(model, cause)
                or _not_cached(model, partial, f"the Hugging Face Hub answered {_status(cause)}"))
    why = "offline mode: HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub is unreachable"
    return _not_cached(model, partial, why)


def _not_cached(model: _HubModel, partial: str | Path | None, why: str) -> str:
    """The model, or (when `partial` is its snapshot directory) some of its files, missing from the cache."""
    from huggingface_hub import constants

    get = f"`{model.download_command}` on a machine with network"
    if partial is not None:
        return f"{model.label}: the cached snapshot {partial} is incomplete ({why}); complete it with {get}"
    return (f"{model.label}: not a local directory, and not in the Hugging Face cache {constants.HF_HUB_CACHE} "
            f"({why}); get it there with {get} (HF_HOME or HF_HUB_CACHE choose the cache), or copy a checkpoint "
            f"directory here and pass its path")


def _status(error: BaseException) -> int | None:
    return getattr(getattr(error, "response", None), "status_code", None)
