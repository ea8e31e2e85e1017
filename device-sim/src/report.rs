//! Output: sentences for people by default, one JSON object per line with `--json`.

use serde_json::{json, Value};

/// Where progress, narration and results go.
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    pub json: bool,
}

impl Reporter {
    /// What a simulated resident did, at simulated time `clock`, and the alert it should cause.
    pub fn note(&self, clock: &str, who: &str, text: &str, expect: Option<&str>) {
        if self.json {
            println!(
                "{}",
                json!({"type": "note", "sim_time": clock, "resident": who, "text": text, "expect": expect})
            );
        } else {
            match expect {
                Some(kind) => println!("[{clock}] {who}: {text}  => expect {kind}"),
                None => println!("[{clock}] {who}: {text}"),
            }
        }
    }

    /// Something the hub did.
    pub fn alert(&self, who: &str, kind: &str, severity: &str, state: &str, device: Option<&str>) {
        if self.json {
            println!(
                "{}",
                json!({"type": "alert", "resident": who, "kind": kind, "severity": severity, "state": state, "device_id": device})
            );
        } else {
            let dev = device.map(|d| format!(" (device {d})")).unwrap_or_default();
            println!("           hub: {kind} {state} for {who}{dev}, severity {severity}");
        }
    }

    /// A line of progress (ignored in JSON mode, where the summary carries the numbers).
    pub fn progress(&self, text: &str) {
        if !self.json {
            println!("{text}");
        }
    }

    /// The final result: a JSON object, or its `text` and the lines in `lines` for people.
    pub fn summary(&self, value: &Value, lines: &[String]) {
        if self.json {
            println!("{}", json!({"type": "summary", "summary": value}));
        } else {
            for l in lines {
                println!("{l}");
            }
        }
    }
}
