"""Local Kubernetes control plane for tests: real etcd + kube-apiserver +
kube-controller-manager + kube-scheduler processes, and a test node agent that
runs pods as local processes. Test infrastructure; never shipped."""

from .cluster import LocalCluster, binary_dirs, write_kubeconfig

__all__ = ["LocalCluster", "binary_dirs", "write_kubeconfig"]
