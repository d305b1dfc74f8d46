"""The per-cell table as AnnData (``infer.py --cells-out cells.h5ad``), the format scanpy, squidpy
and HPA's SubCell tools read.

One observation per cell, named by its ``cell_id``. ``obs``: the table's descriptors and calls
(image, cell and mask ids, box, area, centroid, factors, ``top_class`` and the three best calls).
``obsm``: ``confidences`` (post-processed, the submission's numbers, float64) and ``probabilities``
(the ensemble's raw output, float32), each a frame whose 19 columns are the class names; with
``--embeddings``, ``embedding_{j}`` per ensemble member j (float16, as the ``.npy`` files), and
``X`` their mean (float32; left empty when the members' widths differ). ``uns["hpasc"]``: the
class names, each member's checkpoint, and the run's provenance (ensemble, segmentation, tile
specs, software versions), each entry JSON text, since HDF5 holds no lists of mappings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from hpasc.core import atomic
from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES
from hpasc.core.errors import InputError

CONFIDENCES_KEY, PROBABILITIES_KEY = "confidences", "probabilities"


def embedding_key(member: int) -> str:
    return f"embedding_{member}"


def write_h5ad(path: Path, table: pd.DataFrame, scores: tuple[list[str], list[str]], embeddings: list[np.ndarray],
               members: list[str], provenance: dict[str, object]) -> None:
    """Write ``table`` (whose ``scores`` are its probability and confidence columns) with each
    member's ``embeddings`` (cells × width) atomically as an ``.h5ad`` file."""
    import anndata

    probabilities, confidences = scores
    names = pd.Index(table["cell_id"].astype(str).to_numpy())
    obs = table.drop(columns=[*probabilities, *confidences]).set_axis(names)
    for column in obs.columns[obs.dtypes == object]:  # as anndata would store them, without saying so
        obs[column] = obs[column].astype("category")
    obsm = {CONFIDENCES_KEY: _by_class(table[confidences].to_numpy(np.float64), names),
            PROBABILITIES_KEY: _by_class(table[probabilities].to_numpy(np.float32), names)}
    obsm |= {embedding_key(j): vectors for j, vectors in enumerate(embeddings)}
    widths = {vectors.shape[1] for vectors in embeddings}
    mean = np.mean([v.astype(np.float32) for v in embeddings], axis=0) if len(widths) == 1 else None
    features = None if mean is None else pd.DataFrame(index=[f"feature_{i}" for i in range(mean.shape[1])])
    record = {key: json.dumps(value, default=str) for key, value in provenance.items()}
    cells = anndata.AnnData(X=mean, obs=obs, obsm=obsm, var=features,
                            uns={"hpasc": {"classes": list(CLASS_NAMES), "members": list(members), **record}})
    with atomic.atomic_path(path) as tmp:
        cells.write_h5ad(tmp)


def _by_class(values: np.ndarray, names: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(values, index=names, columns=list(CLASS_NAMES))


def read_h5ad(path: str | os.PathLike):
    """The AnnData of an ``.h5ad`` file (InputError for one that does not read)."""
    import anndata

    try:
        return anndata.read_h5ad(path)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a readable .h5ad file ({exc})") from None


def table_of(cells, scores: tuple[list[str], list[str]], source: str | os.PathLike) -> pd.DataFrame:
    """The cell table an AnnData of :func:`write_h5ad` holds (read from ``source``): ``obs`` with
    the score columns."""
    probabilities, confidences = scores
    if any(np.shape(cells.obsm.get(key, ()))[1:] != (NUM_CLASSES,) for key in (CONFIDENCES_KEY, PROBABILITIES_KEY)):
        raise InputError(f"{source}: not a cell table of hpasc-infer (needs obsm "
                         f"'{CONFIDENCES_KEY}' and '{PROBABILITIES_KEY}' of the {NUM_CLASSES} classes)")
    obs = cells.obs.reset_index(drop=True)
    for column in obs.columns[obs.dtypes == "category"]:  # strings come back as categories
        obs[column] = obs[column].astype(str)
    frames = [pd.DataFrame(np.asarray(cells.obsm[key]), columns=columns)
              for key, columns in ((PROBABILITIES_KEY, probabilities), (CONFIDENCES_KEY, confidences))]
    return pd.concat([obs, *frames], axis=1)
