"""GRPO training for Zoom-IQA and Q-Insight: rewards, advantages, losses (pure functions) and the trainer."""
