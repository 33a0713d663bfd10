"""ImageNet class names for 1000-class heads (shipped as package data)."""

import functools
import os

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@functools.lru_cache(maxsize=None)
def imagenet1k_names():
    """The 1000 ImageNet-1k class names in the order timm's 1000-class heads use (first lemma of each)."""
    names = []
    with open(os.path.join(_DATA, "imagenet1k_classes.tsv"), encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:3] != ["index", "synset", "name"]:
            raise RuntimeError(f"unexpected header in imagenet1k_classes.tsv: {header}")
        for i, line in enumerate(f):
            idx, _synset, name = line.rstrip("\n").split("\t", 2)
            if int(idx) != i:
                raise RuntimeError(f"imagenet1k_classes.tsv: row {i} has index {idx}")
            names.append(name.split(",")[0].strip())
    if len(names) != 1000:
        raise RuntimeError(f"imagenet1k_classes.tsv has {len(names)} rows, expected 1000")
    return tuple(names)


def class_name(index, num_classes):
    """A readable label: the ImageNet name for 1000-class heads, else the class index."""
    if num_classes == 1000:
        return imagenet1k_names()[index]
    return f"class {index}"
