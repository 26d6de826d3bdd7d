//! Compiles the API's `.proto` files (`proto/weft/v1/`) into Rust with protox:
//! no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: worktrees
    // that share a target directory share this script's binary, and each
    // must compile its own `.proto` files (and cargo keeps the paths below
    // relative to the package, so that each worktree's are the ones watched).
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../proto");
    let files =
        ["common", "workflow", "module", "worker"].map(|f| root.join(format!("weft/v1/{f}.proto")));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // `sqlx::migrate!` embeds the migrations: a new one must rebuild the crate.
    let migrations = manifest.join("../migrations");
    println!("cargo:rerun-if-changed={}", migrations.display());
    let descriptors = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
