//! The command line: one file per subcommand. Only this module prints,
//! exits or uses `anyhow`; everything it runs is the library's.

mod app;
mod audit;
mod backends;
mod bench;
mod error;
mod list;
mod output;
mod replay;
mod report;
mod run;

pub use app::main;
