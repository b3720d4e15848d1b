//! Logged decisions as Parquet, for pandas, polars and DuckDB: the same columns as the JSON
//! lines, nested the same way (a list of candidate structs, a list of shadow structs, maps of
//! parameters). Rows go through arrow's JSON decoder with one fixed [`schema`], so the two
//! formats cannot drift apart; they are written in row groups of [`BATCH`] rows, so memory stays
//! flat however many decisions are written, and read back the same way.

use crate::logged::LoggedDecision;
use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

/// Rows per record batch (and row group).
pub const BATCH: usize = 4_096;

#[derive(Debug, thiserror::Error)]
pub enum ColumnarError {
    #[error("arrow")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("parquet")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("a row does not read back as a decision")]
    Row(#[from] serde_json::Error),
}

fn list(item: DataType, nullable: bool) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, nullable)))
}

fn params() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Float64, true),
            ])),
            false,
        )),
        false,
    )
}

/// The columns of a logged decision (docs/replay.md).
pub fn schema() -> SchemaRef {
    let candidate = DataType::Struct(Fields::from(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, true),
        Field::new("features", list(DataType::Float64, true), false),
    ]));
    let shadow = DataType::Struct(Fields::from(vec![
        Field::new("policy", DataType::Utf8, false),
        Field::new("policy_version", DataType::Utf8, false),
        Field::new("params", params(), true),
        Field::new("chosen", DataType::Utf8, false),
        Field::new("propensity", DataType::Float64, false),
        Field::new("distribution", list(DataType::Float64, true), true),
    ]));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
            true,
        ),
        Field::new("user", DataType::Utf8, true),
        Field::new("context", list(DataType::Float64, true), false),
        Field::new("candidates", list(candidate, true), false),
        Field::new("chosen", DataType::Utf8, false),
        Field::new("propensity", DataType::Float64, false),
        Field::new("distribution", list(DataType::Float64, true), true),
        Field::new("reward", DataType::Float64, true),
        Field::new("settled_by", DataType::Utf8, true),
        Field::new("slot", DataType::UInt32, true),
        Field::new("policy", DataType::Utf8, true),
        Field::new("policy_version", DataType::Utf8, true),
        Field::new("policy_params", params(), true),
        Field::new("feature_version", DataType::UInt32, true),
        Field::new("shadows", list(shadow, true), true),
    ]))
}

/// Writes decisions as one Parquet file (Snappy-compressed row groups of [`BATCH`] rows).
pub struct ParquetSink<W: std::io::Write + Send> {
    decoder: Decoder,
    writer: ArrowWriter<W>,
    buffered: usize,
}

impl<W: std::io::Write + Send> ParquetSink<W> {
    pub fn new(out: W) -> Result<Self, ColumnarError> {
        let schema = schema();
        let decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(BATCH)
            .build_decoder()?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(BATCH))
            .build();
        let writer = ArrowWriter::try_new(out, schema, Some(properties))?;
        Ok(Self {
            decoder,
            writer,
            buffered: 0,
        })
    }

    pub fn push(&mut self, decision: &LoggedDecision) -> Result<(), ColumnarError> {
        self.decoder.serialize(std::slice::from_ref(decision))?;
        self.buffered += 1;
        if self.buffered >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ColumnarError> {
        if let Some(batch) = self.decoder.flush()? {
            self.writer.write(&batch)?;
        }
        self.buffered = 0;
        Ok(())
    }

    /// Writes what is buffered and the file's footer.
    pub fn finish(mut self) -> Result<W, ColumnarError> {
        self.flush()?;
        Ok(self.writer.into_inner()?)
    }
}

/// Reads decisions from a Parquet file written with [`schema`]'s columns, a row group at a time.
pub fn read_parquet(file: std::fs::File) -> Result<Vec<LoggedDecision>, ColumnarError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(BATCH)
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        out.extend(rows(&batch?)?);
    }
    Ok(out)
}

/// A record batch's rows as decisions (through arrow's JSON writer, the inverse of the decoder).
fn rows(batch: &RecordBatch) -> Result<Vec<LoggedDecision>, ColumnarError> {
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(ColumnarError::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logged::{Candidate, Shadow};

    fn decision(i: usize) -> LoggedDecision {
        LoggedDecision {
            id: format!("d{i}"),
            timestamp: Some(chrono::DateTime::from_timestamp_micros(1_764_750_000_123_456 + i as i64).expect("time")),
            user: i.is_multiple_of(2).then(|| "u1".to_owned()),
            context: vec![1.0, 0.1 * i as f64, -0.25],
            candidates: vec![
                Candidate {
                    id: "todo:1".into(),
                    kind: Some("todo".into()),
                    features: vec![1.0, 0.0, 0.3],
                },
                Candidate {
                    id: "not_now".into(),
                    kind: None,
                    features: vec![0.0, 1.0, 1.0 / 3.0],
                },
            ],
            chosen: "not_now".into(),
            propensity: 0.4,
            distribution: (!i.is_multiple_of(3)).then(|| vec![0.6, 0.4]),
            reward: (!i.is_multiple_of(4)).then_some(-0.5),
            settled_by: (!i.is_multiple_of(4)).then(|| "reaction".to_owned()),
            slot: None,
            policy: Some("linucb".into()),
            policy_version: Some("1".into()),
            policy_params: [("alpha".to_owned(), 0.3), ("epsilon".to_owned(), 0.1)].into(),
            feature_version: Some(2),
            shadows: vec![Shadow {
                policy: "thompson".into(),
                policy_version: "1".into(),
                params: [("v".to_owned(), 0.1)].into(),
                chosen: "todo:1".into(),
                propensity: 0.7,
                distribution: (!i.is_multiple_of(2)).then(|| vec![0.7, 0.3]),
            }],
        }
    }

    #[test]
    fn decisions_round_trip_through_parquet_across_row_groups() {
        let decisions: Vec<LoggedDecision> = (0..BATCH + 10).map(decision).collect();
        let path = std::env::temp_dir().join(format!("oo-columnar-{}.parquet", std::process::id()));
        let mut sink = ParquetSink::new(std::fs::File::create(&path).expect("file")).expect("sink");
        for d in &decisions {
            sink.push(d).expect("pushed");
        }
        sink.finish().expect("finished");
        let read = read_parquet(std::fs::File::open(&path).expect("file")).expect("read back");
        let _ = std::fs::remove_file(&path);
        assert_eq!(read.len(), decisions.len());
        assert_eq!(
            read, decisions,
            "every column, nested ones and nulls included, survives"
        );
    }
}
