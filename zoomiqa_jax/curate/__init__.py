"""GR-IQA curation (issue 19; Zoom-IQA (Liang et al.), Sec. 3.1.1 and supp. 6.2-6.3; docs/curation.md).

`teacher` writes Zoom-IQA trajectories (local checkpoint, OpenAI-compatible `endpoint`, or replies written
earlier); `vrf_readout` reads our model's answer with and without the image; `hints` and `rater` give the
HACF judgement; `filters` holds the decision rules; `pipeline` chains them per candidate; `report` counts
and summarizes; `cli` is `zoomiqa curate`."""
