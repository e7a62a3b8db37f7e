//! The build stage: a native kustomize engine. A pure function from a file tree plus the
//! Kustomization's build fields to an ordered list of Kubernetes objects (issue 4).
