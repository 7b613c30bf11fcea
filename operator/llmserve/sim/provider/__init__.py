"""A fake GPU cloud provider (RunPod v2 or Vast.ai shapes) for burst tests: `llmserve sim provider`."""
