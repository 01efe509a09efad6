//! Fuzzing entry points (feature `fuzzing`, used by `fuzz/`): each takes
//! arbitrary bytes, runs one part of the ClickHouse store on them, and
//! panics when a property the rest of the code relies on does not hold.
//!
//! - [`ingest_row`]: a decoded `Flow` that ingest's validation accepts is
//!   accepted by the row conversion, and the other way round; the row keeps
//!   the flow as sent.
//! - [`spool_reader`]: the spool's record reader never panics, accounts for
//!   every byte, and hands over only records whose checksum holds; records
//!   written by the spool read back as written.
//! - [`filter_sql`]: a request's filters and window that compile become SQL
//!   whose every user value is a bound `?` (placeholders and values agree,
//!   and the only quoted text is the builder's own constants).

use netverdict_proto::filter::FilterSet;
use netverdict_proto::time::TimeWindow;
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::validate;
use prost::Message;

use super::row::FlowRow;
use super::spool::{Item, MAX_RECORD_BYTES, RecordReader, SEGMENT_HEADER, encode_record};
use super::sql::{Sql, predicate, time_range};

/// Validation against the row conversion.
pub fn ingest_row(data: &[u8]) {
    let Ok(flow) = pb::Flow::decode(data) else {
        return;
    };
    let storable = validate(&flow).is_storable();
    let row = FlowRow::from_flow(&flow);
    assert_eq!(
        storable,
        row.is_ok(),
        "validation and the row disagree on {flow:?}: {:?}",
        row.err()
    );
    if let Ok(row) = row {
        assert_eq!(
            pb::Flow::decode(row.flow.as_slice()).ok().as_ref(),
            Some(&flow)
        );
        assert_eq!(row.id, flow.id);
    }
}

/// The spool's record reader, on a segment and on an earlier-format file.
pub fn spool_reader(data: &[u8]) {
    for legacy in [false, true] {
        // A segment's header is read and skipped before the first item.
        let start = if !legacy && data.starts_with(SEGMENT_HEADER) {
            SEGMENT_HEADER.len() as u64
        } else {
            0
        };
        let mut accounted = start;
        let mut next_offset = start;
        for item in RecordReader::new(data, legacy) {
            let item = item.expect("reading a slice cannot fail");
            let (offset, len) = match &item {
                Item::Record { offset, payload } => {
                    assert!(payload.len() <= MAX_RECORD_BYTES);
                    let header = if legacy { 4 } else { 12 };
                    (*offset, (header + payload.len()) as u64)
                }
                Item::Corrupt { offset, bytes } => {
                    assert!(!legacy, "the earlier format has no resync");
                    assert!(!bytes.is_empty());
                    (*offset, bytes.len() as u64)
                }
                Item::Torn { offset, len } => (*offset, *len),
            };
            assert_eq!(offset, next_offset, "items are contiguous: {item:?}");
            next_offset = offset + len;
            accounted += len;
        }
        assert_eq!(accounted, data.len() as u64, "every byte accounted for");
    }
    // Records cut from the input, written as the spool writes them, read back.
    let payloads: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let mut segment = SEGMENT_HEADER.to_vec();
    for p in &payloads {
        encode_record(p, &mut segment).expect("below the record limit");
    }
    let read: Vec<Vec<u8>> = RecordReader::new(segment.as_slice(), false)
        .map(|i| match i.expect("a slice") {
            Item::Record { payload, .. } => payload,
            other => panic!("a written segment reads back whole: {other:?}"),
        })
        .collect();
    assert_eq!(read, payloads);
}

/// Filters and a window against the SQL builder.
pub fn filter_sql(data: &[u8]) {
    let Ok(request) = pb::GetFlowsRequest::decode(data) else {
        return;
    };
    let Ok(filters) = FilterSet::compile(&request.include, &request.exclude) else {
        return;
    };
    let Ok(window) = TimeWindow::from_request(request.since.as_ref(), request.until.as_ref())
    else {
        return;
    };
    let mut sql = Sql::new("SELECT id FROM flows WHERE ");
    predicate(&mut sql, &filters);
    time_range(&mut sql, &window);
    let placeholders = sql.text.matches('?').count();
    assert_eq!(
        placeholders,
        sql.binds.len(),
        "every placeholder bound once: {}",
        sql.text
    );
    // Quoted text is the builder's: enum members and hex IPv6 bounds.
    for (i, quoted) in sql.text.split('\'').enumerate() {
        if i % 2 == 1 {
            assert!(
                quoted
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_hexdigit()),
                "a quoted literal that is no constant: {quoted:?} in {}",
                sql.text
            );
        }
    }
    assert_eq!(
        sql.text.matches('\'').count() % 2,
        0,
        "quotes balance: {}",
        sql.text
    );
}
