"""The kopf operator: reconciles ModelDeployments into worker pods and reports status."""
