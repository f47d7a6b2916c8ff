"""kubechat: large language models served the FastChat way, Kubernetes-native.

The core package holds what every role shares (spec, plan, discovery, routing, metrics helpers,
the CLI). The roles live in their own folders and import as ``kubechat.worker``,
``kubechat.gateway``, ``kubechat.operator`` and ``kubechat.ui``.
"""

__version__ = "0.1.0"
