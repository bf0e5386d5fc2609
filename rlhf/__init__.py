"""rlhf: the InstructGPT recipe on top of minigpt — world, SFT, reward model, PPO, evaluation."""
