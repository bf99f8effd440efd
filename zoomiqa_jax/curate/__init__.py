"""GR-IQA curation (issue 19): low-level hints for the rater (`hints`) and the VRF / HACF decision rules
(`filters`) of Zoom-IQA (Liang et al.), Sec. 3.1.1 and supp. 6.2-6.3. See docs/curation.md."""
