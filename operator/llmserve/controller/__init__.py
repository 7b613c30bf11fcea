"""The kopf operator: reconciles LLMServes into engine Deployments and reports their state."""
