//! The `otpgate` command: the server, the agent, the login prompt and the tools
//! to run them, in one binary. Everything is in the library's `cli` module.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    otpgate::cli::main()
}
