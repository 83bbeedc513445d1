//! `khala-parity list`: the scenario library or the invariant catalogue.

use super::error::CliResult;
use super::output::Format;
use super::run::load_scenarios;
use clap::ValueEnum;
use khala_parity::exit;
use khala_parity::model::catalogue;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(value_enum)]
    what: ListWhat,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ListWhat {
    Scenarios,
    Invariants,
}

pub fn execute(args: ListArgs) -> CliResult {
    match args.what {
        ListWhat::Invariants => {
            match args.format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(catalogue::CATALOGUE)?)
                }
                Format::Human => {
                    for invariant in catalogue::CATALOGUE {
                        println!(
                            "{:<4} {:<9?} {}",
                            invariant.id, invariant.severity, invariant.statement
                        );
                    }
                }
            }
            Ok(exit::ALLOW)
        }
        ListWhat::Scenarios => {
            let (scenarios, invalid) = load_scenarios(&[])?;
            match args.format {
                Format::Json => {
                    let list: Vec<_> = scenarios
                        .iter()
                        .map(|(path, scenario)| {
                            serde_json::json!({
                                "name": scenario.name,
                                "description": scenario.description,
                                "path": path,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
                Format::Human => {
                    for (_, scenario) in &scenarios {
                        println!("{:<20} {}", scenario.name, scenario.description);
                    }
                }
            }
            Ok(if invalid.is_empty() {
                exit::ALLOW
            } else {
                exit::INVALID_INPUT
            })
        }
    }
}
