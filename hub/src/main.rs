//! The `hub` binary; everything it does lives in the library ([`hub::cli`]).

fn main() -> std::process::ExitCode {
    hub::cli::main()
}
