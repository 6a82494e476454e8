//! What the sinks send in OCSF, checked against the official OCSF schema: the
//! OCSF server's compiled export of the mapping's version
//! ([`authlog::sink::ocsf::OCSF_VERSION`]), as PyPI's `ocsf-json-schema` bundles
//! it, with the OCSF validator's rules, by `tests/interop/ocsf_validate.py`
//! (its docstring says what the export covers and what the script adds). One
//! validator process serves every event of a test. `tests/run.sh` installs the
//! packages (`tests/interop/requirements.txt`) and sets `AUTHLOG_TEST_PYTHON`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use serde_json::{Value, json};

struct Validator {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

pub struct OcsfSchemas {
    validator: Mutex<Validator>,
}

impl OcsfSchemas {
    /// Starts the validator for the mapping's OCSF version.
    pub fn load() -> OcsfSchemas {
        let python = std::env::var("AUTHLOG_TEST_PYTHON").unwrap_or_else(|_| {
            panic!("AUTHLOG_TEST_PYTHON is not set: run ./tests/run.sh, which installs ocsf-json-schema for the OCSF tests")
        });
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/ocsf_validate.py"
        );
        let mut child = Command::new(&python)
            .args([
                script,
                "--version",
                authlog::sink::ocsf::OCSF_VERSION,
                "--serve",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{python}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        OcsfSchemas {
            validator: Mutex::new(Validator {
                child,
                stdin,
                stdout,
            }),
        }
    }

    /// The validator's problems with one event (empty: valid), each naming
    /// `label`, the authlog type, the class and the attribute path.
    fn problems(&self, label: &str, event: &Value) -> Vec<String> {
        let mut v = self.validator.lock().unwrap();
        let mut line = serde_json::to_string(&json!({"label": label, "event": event})).unwrap();
        line.push('\n');
        if let Err(e) = v
            .stdin
            .write_all(line.as_bytes())
            .and_then(|_| v.stdin.flush())
        {
            return vec![format!("the OCSF validator is gone: {e}")];
        }
        let mut answer = String::new();
        match v.stdout.read_line(&mut answer) {
            Ok(0) | Err(_) => return vec!["the OCSF validator stopped without an answer".into()],
            Ok(_) => {}
        }
        match serde_json::from_str::<Value>(&answer) {
            Ok(a) => a["problems"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|s| s.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_else(|| vec![format!("the OCSF validator said {answer}")]),
            // Not JSON: the validator could not start (its message, e.g. a
            // missing package), then exits.
            Err(_) => {
                let mut rest = String::new();
                let _ = std::io::Read::read_to_string(&mut v.stdout, &mut rest);
                vec![format!("the OCSF validator failed: {answer}{rest}")]
            }
        }
    }

    /// One event; Err: the validator's report.
    pub fn validate(&self, event: &Value) -> Result<(), String> {
        let p = self.problems("", event);
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("\n"))
        }
    }

    /// Every (label, event); Err: the validator's report on all that are
    /// invalid, one line per problem.
    pub fn validate_all(&self, events: &[(String, Value)]) -> Result<(), String> {
        let mut report = Vec::new();
        let mut bad = 0;
        for (label, event) in events {
            let p = self.problems(label, event);
            if !p.is_empty() {
                bad += 1;
                report.extend(p);
            }
        }
        if report.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{bad} of {} events are not valid OCSF {}:\n{}",
                events.len(),
                authlog::sink::ocsf::OCSF_VERSION,
                report.join("\n")
            ))
        }
    }
}

impl Drop for OcsfSchemas {
    fn drop(&mut self) {
        if let Ok(v) = self.validator.get_mut() {
            // Its standard input closes with it: the validator ends.
            let _ = v.child.kill();
            let _ = v.child.wait();
        }
    }
}
