"""tensorflow-datasets builders (array_record, no TensorFlow) for the seven IQA benchmarks.

`build_dataset(name, manual_dir, data_dir)` builds one benchmark from its manual directory (docs/datasets.md,
"Building"); `load_split(data_dir, name, split)` reads a built split as a grain-ready random-access source.
"""

from zoomiqa_jax.data.builders.manual import READERS, ManualDirError, RawLabel, dataset_root
from zoomiqa_jax.data.builders.tfds_builder import (
    BadRecord,
    BadRecordError,
    BuildReport,
    IqaBuilder,
    IqaSource,
    build_dataset,
    load_split,
    plan_examples,
    read_build_log,
)

DATASETS = tuple(READERS)

__all__ = [
    "DATASETS",
    "READERS",
    "BadRecord",
    "BadRecordError",
    "BuildReport",
    "IqaBuilder",
    "IqaSource",
    "ManualDirError",
    "RawLabel",
    "build_dataset",
    "dataset_root",
    "load_split",
    "plan_examples",
    "read_build_log",
]
