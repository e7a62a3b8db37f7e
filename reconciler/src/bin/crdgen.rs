//! `gitops-crdgen`: writes the CRDs generated from the API types to `reconciler/config/crd/`, and
//! the API reference rendered from them to `docs/API.md`.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(gitops_reconciler::api::crd::COMMITTED_DIR);
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in gitops_reconciler::api::crd::all() {
        let path = dir.join(file);
        std::fs::write(&path, gitops_reconciler::api::crd::render(&crd)?)?;
        println!("wrote {}", path.display());
    }
    let crds: Vec<_> = gitops_reconciler::api::crd::all()
        .into_iter()
        .map(|(_, crd)| crd)
        .collect();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(gitops_reconciler::api::reference::COMMITTED_PATH);
    std::fs::write(&reference, gitops_reconciler::api::reference::render(&crds))?;
    println!("wrote {}", reference.display());
    Ok(())
}
