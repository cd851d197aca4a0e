//! Placeholder until the benchmark lands.
#[derive(Debug)]
pub struct BenchError(String);
impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::error::Error for BenchError {}
impl BenchError {
    pub fn is_usage(&self) -> bool {
        true
    }
}
pub fn run(_args: &[String]) -> Result<(), BenchError> {
    Err(BenchError("not built yet".into()))
}
