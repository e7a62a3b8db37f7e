//! `gitops-crdgen`: writes the CRDs generated from the API types to `reconciler/config/crd/`.

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
    Ok(())
}
