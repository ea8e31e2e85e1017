//! The hub, as a binary of the test package so that `cargo test` builds it first.

fn main() -> std::process::ExitCode {
    hub::cli::main()
}
