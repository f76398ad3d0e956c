"""The synthetic corpus on disk: sharded folders of .npy arrays (byte-identical for the same seed).

outputs/corpus/
  meta.json                       layout sizes, image size, counts, seed, the params used
  train/shard_0000/images.npy     (N, H, W, 3) uint8 sRGB
                  /params.npy     (N, P) float32 parameter vectors (ifn.model.layout.ParamLayout order)
                  /landmarks.npy  (N, 68, 2) float32 pixel positions of the 68 landmarks
                  /shading_gram.npy (N, 9, 9) float32 Gram of the SH shading basis on the ground-truth normals
                  /masks.npy      (N, H, W) bool face-model coverage
                  /face_masks.npy (N, H, W) bool coverage by the face part, eyeballs and mouth socket (no scalp,
                                  ears or neck; corpora written before 2026-12-07 lack it: masks stand in)
  val/...  test/...

The whole corpus folder is written to a temporary name and renamed when complete (ifn.atomic), so an
interrupted synthesis never leaves a corpus that looks finished. `.npy` files hold no timestamps, unlike
`.npz` archives, which is what makes shards byte-identical across runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARRAYS = ("images", "params", "landmarks", "shading_gram", "masks", "face_masks")
SPLITS = ("train", "val", "test")


def write_shard(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for name in ARRAYS:
        np.save(folder / f"{name}.npy", np.ascontiguousarray(arrays[name]), allow_pickle=False)


@dataclass
class Corpus:
    """Read access to a corpus folder: shard paths per split, lengths, memory-mapped arrays."""

    root: Path
    meta: dict

    @classmethod
    def open(cls, root: str | Path) -> "Corpus":
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no synthetic corpus at {root} (missing meta.json): run "
                                    f"`dvc repro synthesize` first")
        return cls(root, json.loads(meta_path.read_text()))

    def shards(self, split: str) -> list[Path]:
        return sorted((self.root / split).glob("shard_*"))

    def __len__(self) -> int:
        return sum(self.meta["counts"].values())

    def load(self, split: str, name: str, mmap: bool = True) -> np.ndarray:
        """One array of a split, all shards concatenated (memory-mapped per shard when mmap)."""
        parts = [np.load(s / f"{name}.npy", mmap_mode="r" if mmap else None) for s in self.shards(split)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
