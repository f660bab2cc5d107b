#!/usr/bin/env python3
"""Lists the pods of a namespace through a kubeconfig context with the
official Python client (PyPI `kubernetes`), which runs the context's exec
credential plugin (`infra tokens create`) the way kubectl does.

    python3 tests/list_pods.py CONTEXT [NAMESPACE]

Prints one pod name a line. The kubeconfig is the usual one ($KUBECONFIG or
~/.kube/config). Used by tests/exec_plugin.rs.
"""

import sys

from kubernetes import client, config


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    context = sys.argv[1]
    namespace = sys.argv[2] if len(sys.argv) == 3 else "default"
    config.load_kube_config(context=context)
    pods = client.CoreV1Api().list_namespaced_pod(namespace)
    for pod in pods.items:
        print(pod.metadata.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
