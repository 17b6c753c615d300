"""``verifily push`` and ``output.push_to_hub``: a run uploaded to a Hugging Face Hub model repo.

The folder ``verifily export`` writes (:func:`verifily_core.exporting.export_run`: the adapter
and tokenizer, or the merged model, with the model card and ``verifily_export.json``) is built
in a temporary directory that is removed whatever happens. The repo is created when missing,
private unless asked otherwise (an existing repo keeps its visibility), and the folder is
uploaded as one commit whose message names the run id and its reproducibility hash.

The token is the one given (``--hf-token``, ``$HF_TOKEN``), else the one ``huggingface_hub``
finds (its saved login). It travels only in the requests' ``Authorization`` header: nothing
here writes it and no message holds it. The Hub is ``$HF_ENDPOINT`` when set (read at each push
and passed to ``HfApi``), else huggingface.co. Every failure is one
:class:`~verifily_core.errors.PushError` line naming the repo and what to do.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

import attrs

from verifily_core.config_validation import hub_repo_problem
from verifily_core.errors import ConfigError, PushError, VerifilyTrainError, describe_os_error
from verifily_core.files import read_json

ENDPOINT_ENV = "HF_ENDPOINT"
"""The environment variable naming the Hub to push to (huggingface_hub's own; default huggingface.co)."""
TEMP_PREFIX = "verifily-push-"
"""Prefix of the temporary directory the exported folder is built in."""
LOGIN_HINT = "run `hf auth login` (`huggingface-cli login` with older huggingface_hub) or set HF_TOKEN"

_STATUS_ADVICE = {
    401: "the token was not accepted; log in again or set a valid HF_TOKEN",
    403: "the token may not write to this repo; use a token with write access to its namespace",
    404: "no such repo or branch for this token; check the repo id (namespace/name) and the revision",
    409: "the repo changed during the push, or the name is taken by another kind of repo; retry or pick another name",
    429: "the Hub is limiting the request rate; retry later",
}


@attrs.frozen
class PushResult:
    """What a push made: the repo, the commit and the files uploaded."""

    repo_id: str
    repo_url: str
    revision: str
    commit_oid: str
    commit_url: str
    files: tuple[str, ...]
    run_id: str
    merged: bool
    private: bool
    """The visibility asked for a new repo (an existing repo keeps its own)."""


def hub_endpoint() -> str | None:
    """``$HF_ENDPOINT`` without a trailing slash, or ``None`` for huggingface_hub's default."""
    return os.environ.get(ENDPOINT_ENV, "").strip().rstrip("/") or None


def hub_token(hf_token: str | None, repo_id: str) -> str:
    """The token to push to ``repo_id`` with: ``hf_token``, else huggingface_hub's ``get_token()``
    (``$HF_TOKEN``, the saved login).

    :raises PushError: offline mode is on (``HF_HUB_OFFLINE``), or there is no token.
    """
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise PushError(f"cannot push to {repo_id}: pushing needs the network and offline mode is on "
                        "(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE); unset it to push")
    try:
        token = hf_token or get_token()
    except Exception as exc:  # an OIDC exchange or a token refresh that failed
        raise PushError(f"cannot push to {repo_id}: reading the Hugging Face token failed "
                        f"({type(exc).__name__}); {LOGIN_HINT}") from None
    if not token:
        raise PushError(f"cannot push to {repo_id}: no Hugging Face token; {LOGIN_HINT}")
    return token


def push_run(run_path: str | Path, repo_id: str, *, registries: Any, merge: bool = False, dtype: str = "float32",
             public: bool = False, revision: str | None = None, hf_token: str | None = None,
             verify: bool = True, merge_into: str = "dequantized") -> PushResult:
    """Export the completed run at ``run_path`` (as ``verifily export`` does, into a temporary
    directory) and upload it to the model repo ``repo_id``, created when missing (private unless
    ``public``), on branch ``revision`` (created from ``main`` when missing; default ``main``).

    :raises ConfigError: a bad repo id, or what :func:`~verifily_core.exporting.export_run` refuses.
    :raises EvalError: the run is not completed or does not verify (``verify=False`` skips that).
    :raises PushError: no token, offline mode, the Hub unreachable or answering an HTTP error.
    """
    problem = hub_repo_problem(repo_id)
    if problem:
        raise ConfigError(f"--repo: {problem}")
    token = hub_token(hf_token, repo_id)
    from verifily_core.exporting import export_run

    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as tmp:
        folder = export_run(run_path, Path(tmp) / "export", registries=registries, merge=merge, dtype=dtype,
                            merge_into=merge_into, hf_token=hf_token, verify=verify, purpose="push it")
        info = read_json(folder / "verifily_export.json")
        files = tuple(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()))
        try:
            url, commit = _upload(folder, repo_id, token, public, revision, info)
        except Exception as exc:
            line = _failure(exc, repo_id)
            if line is None:
                raise
            raise PushError(line.replace(token, "***") if len(token) >= 8 else line) from exc
    return PushResult(repo_id=getattr(url, "repo_id", None) or repo_id, repo_url=str(url),
                      revision=revision or "main", commit_oid=commit.oid, commit_url=commit.commit_url,
                      files=files, run_id=info["run_id"], merged=merge, private=not public)


def _upload(folder: Path, repo_id: str, token: str, public: bool, revision: str | None,
            info: dict[str, Any]) -> tuple[Any, Any]:
    """Create the repo (and branch) and commit ``folder``; returns huggingface_hub's RepoUrl and CommitInfo."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint(), token=token)
    url = api.create_repo(repo_id, private=not public, exist_ok=True, repo_type="model")
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
        commit_message=f"Upload run {info['run_id']} (reproducibility_hash {info['reproducibility_hash']})",
        commit_description=(f"Exported by Verifily Train from run {info['run_id']}: "
                            f"{'merged model' if info.get('merged') else 'LoRA adapter'} of {info.get('base_model')}, "
                            f"dataset {info.get('dataset')}."),
    )
    return url, commit


def _failure(exc: BaseException, repo_id: str) -> str | None:
    """One line for a failed request (HTTP status, offline, unreachable, refused input), or
    ``None`` for an exception that is none of these (a bug, reported as such)."""
    from huggingface_hub.utils import HfHubHTTPError, OfflineModeIsEnabled

    where = f"push to {repo_id} failed"
    if isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None:
        status = exc.response.status_code
        advice = _STATUS_ADVICE.get(status) or ("a server error on the Hub; retry later" if status >= 500 else "")
        said = _one_line(getattr(exc, "server_message", None) or "")
        return f"{where}: the Hub answered HTTP {status}" + (f" ({said})" if said else "") + \
            (f"; {advice}" if advice else "")
    if isinstance(exc, OfflineModeIsEnabled):
        return f"{where}: offline mode is on (HF_HUB_OFFLINE); unset it to push"
    if isinstance(exc, (ConnectionError, TimeoutError, *_transport_errors())):
        endpoint = hub_endpoint() or "the Hugging Face Hub"
        return (f"{where}: cannot reach {endpoint} ({type(exc).__name__}: {_one_line(str(exc))}); "
                "check the network connection and retry")
    if isinstance(exc, OSError):
        return f"{where}: {describe_os_error(exc)}"
    if isinstance(exc, ValueError):  # huggingface_hub refusing a repo id, a card's metadata, an answer
        return f"{where}: {_one_line(str(exc))}"
    return None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's network errors (huggingface_hub's client: httpx2, httpx or requests)."""
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            return (getattr(__import__(module), name),)
        except (ImportError, AttributeError):
            continue
    return ()


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def retry_command(run_path: str | Path, repo_id: str, public: bool = False) -> str:
    """The ``verifily push`` command that pushes the run as ``output.push_to_hub`` would."""
    return f"verifily push --run {shlex.quote(str(run_path))} --repo {shlex.quote(repo_id)}" + \
        (" --public" if public else "")


def push_trained_run(run: Any, cfg: Any, registries: Any, hf_token: str | None) -> PushResult:
    """Push a run this process just trained and sealed, as its ``output.push_to_hub`` asks (its adapter).

    :raises PushError: the push failed; the run is left as it is, and the message says where it
        is, why the push failed and the command that retries it (the error's ``run`` is the run).
    """
    repo, public = cfg.output.hub_repo, not cfg.output.hub_private
    try:
        return push_run(run.path, repo, registries=registries, public=public, hf_token=hf_token)
    except (VerifilyTrainError, OSError) as exc:
        why = f"push to {repo} failed: {describe_os_error(exc)}" if isinstance(exc, OSError) else str(exc)
        raise PushError(f"the run is complete at {run.path}, but {why}; retry with: "
                        f"{retry_command(run.path, repo, public)}", run=run) from exc
