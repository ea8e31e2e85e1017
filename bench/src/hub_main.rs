//! The hub, under the name the benchmark runs it by (same program as `hub`).

fn main() -> std::process::ExitCode {
    hub::cli::main()
}
