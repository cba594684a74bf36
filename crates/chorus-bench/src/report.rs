//! Results: one row per (scenario, target), printed as a table and as JSON lines.

use std::io::Write;

use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub target: &'static str,
    pub fields: Vec<(&'static str, Value)>,
}

impl Row {
    pub fn new(scenario: &'static str, target: &'static str) -> Self {
        Self {
            scenario,
            target,
            fields: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) -> &mut Self {
        self.fields.push((key, value.into()));
        self
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_f64())
    }

    pub fn json(&self) -> Value {
        let mut map = Map::new();
        map.insert("scenario".into(), self.scenario.into());
        map.insert("target".into(), self.target.into());
        for (k, v) in &self.fields {
            map.insert((*k).into(), v.clone());
        }
        Value::Object(map)
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes the table (when `table`), then the JSON lines, to `out`.
pub fn print(out: &mut impl Write, rows: &[Row], table: bool) -> std::io::Result<()> {
    let groups = if table { rows } else { &[] };
    for group in groups.chunk_by(|a, b| a.scenario == b.scenario) {
        let mut keys: Vec<&str> = Vec::new();
        for row in group {
            for (k, _) in &row.fields {
                if !keys.contains(k) {
                    keys.push(k);
                }
            }
        }
        let mut header = vec!["scenario".to_owned(), "target".to_owned()];
        header.extend(keys.iter().map(|k| (*k).to_owned()));
        let body: Vec<Vec<String>> = group
            .iter()
            .map(|row| {
                let mut line = vec![row.scenario.to_owned(), row.target.to_owned()];
                for k in &keys {
                    line.push(
                        row.fields
                            .iter()
                            .find(|(key, _)| key == k)
                            .map(|(_, v)| cell(v))
                            .unwrap_or_default(),
                    );
                }
                line
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                body.iter()
                    .map(|l| l[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let fmt = |line: &[String]| {
            line.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(out, "{}", fmt(&header))?;
        for line in &body {
            writeln!(out, "{}", fmt(line))?;
        }
        writeln!(out)?;
    }
    for row in rows {
        writeln!(out, "{}", row.json())?;
    }
    Ok(())
}
