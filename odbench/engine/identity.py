"""What makes two results the same result: job keys and study names.

A job's key is a sha256 over everything that decides its numbers:

* the method's parameters resolved as far as they can be without the data
  (the user's, checked and coerced, over the declared defaults); defaults
  computed from the data (DROCC's radius √d/2) are functions of the code
  and the data, both of which are in the key;
* the data's identity (:func:`data_identity`): the dataset id (its plugin
  pins the files' hashes), the hash of a user's own file
  (``Dataset.fingerprint``), and the own sha256 of any local copy used
  unverified under ``ODBENCH_TRUST_LOCAL_FILES=1``, so such a copy never
  poses as the published data;
* the task: protocol, its options, normal class, repetition, base seed,
  the selection rule and the scoring mode (``odbench.deep.scoring_modes``);
* the code fingerprint (``odbench.engine.fingerprint``): both plugin
  files, every odbench module they and the job runner import, and the
  versions of the libraries that code imports.

A study is keyed the same way minus the searched parameters, plus what the
search is asked (metric, grid): it is never reused on another split.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from odbench.core.contracts import Dataset
from odbench.core.download import dataset_root, local_identity


def _digest(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def data_identity(dataset: Dataset) -> str:
    """The data part of a job key: ``Dataset.fingerprint()``, plus the own hash of each trusted,
    unverified copy of the dataset's files.  Unchanged (``fingerprint()``) for the published files."""
    trusted = [found for remote in dataset.files if (found := local_identity(remote, dataset_root(dataset.name)))]
    return "|".join([dataset.fingerprint(), *trusted]) if trusted else dataset.fingerprint()


def job_key(
    *,
    method: str,
    params: dict[str, Any],
    dataset: str,
    protocol: str,
    protocol_options: dict[str, Any],
    normal_class: str | None,
    repetition: int,
    base_seed: int,
    selection: str,
    code: str,
    data: str,
    scoring: str = "eval",
) -> str:
    """sha256 (hex) of a job's identity (see the module docstring)."""
    identity = {
        "method": method, "params": params, "dataset": dataset, "protocol": protocol,
        "protocol_options": protocol_options, "normal_class": normal_class, "repetition": repetition,
        "base_seed": base_seed, "selection": selection, "code": code, "data": data,
    }  # fmt: skip
    if scoring != "eval":  # an authors' scoring mode is another result; eval-mode keys keep their shape
        identity["scoring"] = scoring
    return _digest(identity)


def study_name(key: str, *, method: str, dataset: str, protocol: str, normal_class: str | None, repetition: int) -> str:
    """A readable study name that ends in its identity hash: ``drocc|thyroid|contamination|-|r0|<12 hex>``."""
    return f"{method}|{dataset}|{protocol}|{normal_class or '-'}|r{repetition}|{key[:12]}"


def study_key(job_identity: str, *, metric: str | None, grid: bool) -> str:
    """The identity of a study: its job's key (split, fixed parameters, code) and what the search maximizes."""
    return _digest({"job": job_identity, "metric": metric, "grid": grid})
