//! The `khala-parity` command line: `cli` parses the arguments, runs the
//! library and is the only code that prints or exits.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
