//! `apiary token create|list|revoke`: the console's access tokens.

use serde_json::json;

use super::CliResult;
use super::args::TokenCommand;
use crate::Apiary;
use apiary_ledger::travel::format_ms;

/// Runs one `apiary token` command.
pub(crate) async fn run(ap: &Apiary, json: bool, command: TokenCommand) -> CliResult<()> {
    let store = ap.tokens();
    match command {
        TokenCommand::Create { scopes, expires } => {
            let created = store.create(&scopes, expires).await?;
            if json {
                println!(
                    "{}",
                    json!({"token": created.text, "record": created.token})
                );
            } else {
                println!("{}", created.text);
                let scopes: Vec<&str> = created.token.scopes.iter().map(|s| s.as_str()).collect();
                let until = created
                    .token
                    .expires_ms
                    .map_or("until revoked".to_string(), |ms| {
                        format!("until {}", format_ms(ms))
                    });
                eprintln!(
                    "token {} ({}), {until}. It is shown this once: keep it now. Send it as \
                     `Authorization: Bearer …`.",
                    created.token.id,
                    scopes.join(", ")
                );
            }
        }
        TokenCommand::List => {
            let list = store.list().await?;
            for problem in &list.problems {
                eprintln!("warning: {problem}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&list.tokens)?);
            } else if list.tokens.is_empty() {
                println!("no tokens (`apiary token create --scope read` makes one)");
            } else {
                println!("{:<14}{:<22}{:<26}EXPIRES", "ID", "SCOPES", "CREATED");
                for t in &list.tokens {
                    let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                    println!(
                        "{:<14}{:<22}{:<26}{}",
                        t.id,
                        scopes.join(","),
                        format_ms(t.created_ms),
                        t.expires_ms.map_or("never".to_string(), format_ms)
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let revoked = store.revoke(&id).await?;
            if json {
                println!("{}", json!({"id": revoked.id, "revoked": true}));
            } else {
                println!("revoked token {}", revoked.id);
            }
        }
    }
    Ok(())
}
