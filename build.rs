//! `sqlx::migrate!` embeds `migrations/` in the binary when the crate compiles; cargo does
//! not know that, so a new migration file alone would not rebuild the crate and a build
//! would run without it. Rebuild when anything under `migrations/` changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
