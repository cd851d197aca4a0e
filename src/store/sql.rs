//! The values that cross the store interface, the same for both backends:
//! parameters ([`Val`]), result cells ([`Value`]) and rows ([`Row`]), and
//! the one rewrite PostgreSQL needs of the SQL written for both.
//!
//! SQL is written once, in the subset both engines share, with SQLite's
//! numbered placeholders (`?1`). For PostgreSQL they become `$1`, and a
//! comment `/*pg: ...*/` becomes its text: that is how a row lock
//! (`FOR UPDATE`, `SKIP LOCKED`) is added where only PostgreSQL needs it
//! (SQLite serialises writers on the file, so it reads the comment as a
//! comment).

use super::DbError;
use postgres::types::{IsNull, ToSql, Type};
use std::fmt;

/// A parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Bool(bool),
    /// Arrays, for PostgreSQL's multi-row statements (`unnest(?1::TEXT[],
    /// ...)`): one statement for a whole batch. SQLite has no arrays; its
    /// multi-row writes are loops of one-row statements (in-process, so
    /// they cost no round trip).
    Texts(&'a [Option<&'a str>]),
    Reals(&'a [Option<f64>]),
    Ints(&'a [Option<i64>]),
}

impl From<i64> for Val<'_> {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl From<f64> for Val<'_> {
    fn from(v: f64) -> Self {
        Val::Real(v)
    }
}
impl From<bool> for Val<'_> {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}
impl<'a> From<&'a str> for Val<'a> {
    fn from(v: &'a str) -> Self {
        Val::Text(v)
    }
}
impl<'a> From<&'a String> for Val<'a> {
    fn from(v: &'a String) -> Self {
        Val::Text(v)
    }
}
impl<'a> From<&'a &str> for Val<'a> {
    fn from(v: &'a &str) -> Self {
        Val::Text(v)
    }
}
impl<'a, T> From<Option<T>> for Val<'a>
where
    T: Into<Val<'a>>,
{
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}
impl<'a> From<&'a [Option<&'a str>]> for Val<'a> {
    fn from(v: &'a [Option<&'a str>]) -> Self {
        Val::Texts(v)
    }
}
impl<'a> From<&'a [Option<f64>]> for Val<'a> {
    fn from(v: &'a [Option<f64>]) -> Self {
        Val::Reals(v)
    }
}
impl<'a> From<&'a [Option<i64>]> for Val<'a> {
    fn from(v: &'a [Option<i64>]) -> Self {
        Val::Ints(v)
    }
}
impl<'a> From<&'a Option<String>> for Val<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Val::Null, Val::Text)
    }
}

/// `params![a, b]`: a parameter list for [`Tx`](super::Tx)'s methods.
#[macro_export]
macro_rules! params {
    () => { &[][..] as &[$crate::store::Val] };
    ($($x:expr),+ $(,)?) => {
        &[$($crate::store::Val::from($x)),+][..]
    };
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Val::Texts(_) | Val::Reals(_) | Val::Ints(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "SQLite takes no array parameters".into(),
                ))
            }
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(i),
            Val::Real(f) => ValueRef::Real(f),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
            Val::Bool(b) => ValueRef::Integer(i64::from(b)),
        }))
    }
}

/// PostgreSQL types its parameters from the statement (`int4` or `int8`,
/// `float8`, `bool`...), and the binary protocol wants exactly that type;
/// a value is converted to what the server asked for, when it fits.
impl ToSql for Val<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("parameter {self:?} cannot be sent as {ty}").into()
        };
        match *self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Val::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                Type::INT8 if f.fract() == 0.0 => (f as i64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => f.to_string().to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Val::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.to_sql(ty, out)
                }
                _ => Err(mismatch()),
            },
            Val::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT8 => i64::from(b).to_sql(ty, out),
                Type::INT4 => i32::from(b).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Val::Texts(v) => match *ty {
                Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => v.to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Val::Reals(v) => match *ty {
                Type::FLOAT8_ARRAY => v.to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Val::Ints(v) => match *ty {
                Type::INT8_ARRAY => v.to_sql(ty, out),
                _ => Err(mismatch()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// One cell of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Value {
    pub(super) fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
        }
    }

    pub(super) fn from_pg(row: &postgres::Row, i: usize) -> Result<Value, DbError> {
        let ty = row.columns()[i].type_();
        let v = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            _ => {
                return Err(DbError::Type(format!(
                    "column {i} ({}) has type {ty}, which vigil does not read",
                    row.columns()[i].name()
                )))
            }
        };
        Ok(v.unwrap_or(Value::Null))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
            Value::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// What a cell can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<f64> {
        match v {
            Value::Real(f) => Some(*f),
            // SQLite keeps an integral value given to a REAL expression
            // (not column) as an integer.
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<bool> {
        match v {
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Cell `i` as a `T`; a NULL read as anything but an `Option` is an
    /// error, as a cell of another type is.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, DbError> {
        let cell = self
            .0
            .get(i)
            .ok_or_else(|| DbError::Type(format!("no column {i}")))?;
        T::from_value(cell).ok_or_else(|| {
            DbError::Type(format!(
                "column {i} is {cell}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// The SQL as PostgreSQL takes it: `?N` → `$N`, `/*pg: X*/` → `X`.
/// Quoted strings are left alone.
pub fn for_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        if c == '\'' {
            // A literal, to its closing quote ('' is a quote inside).
            let end = rest[1..].find('\'').map_or(rest.len(), |i| i + 2);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else if let Some(after) = rest.strip_prefix("/*pg:") {
            let end = after.find("*/").unwrap_or(after.len());
            out.push_str(after[..end].trim());
            rest = after.get(end + 2..).unwrap_or("");
        } else if c == '?' {
            out.push('$');
            rest = &rest[1..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_dialect() {
        assert_eq!(
            for_postgres("SELECT a FROM t WHERE b = ?1 AND c = '?2' /*pg: FOR UPDATE*/"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' FOR UPDATE"
        );
        assert_eq!(
            for_postgres("x = 'it''s ?' OR y = ?12"),
            "x = 'it''s ?' OR y = $12"
        );
    }

    #[test]
    fn cells_read_as_their_types() {
        let row = Row(vec![
            Value::Int(3),
            Value::Real(1.5),
            Value::Null,
            Value::Text("t".into()),
        ]);
        assert_eq!(row.get::<i64>(0).unwrap(), 3);
        assert_eq!(row.get::<f64>(0).unwrap(), 3.0);
        assert_eq!(row.get::<f64>(1).unwrap(), 1.5);
        assert_eq!(row.get::<Option<String>>(2).unwrap(), None);
        assert!(row.get::<String>(2).is_err());
        assert_eq!(row.get::<String>(3).unwrap(), "t");
        assert!(row.get::<i64>(3).is_err());
        assert!(row.get::<i64>(9).is_err());
    }
}
