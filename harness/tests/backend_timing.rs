//! Temporary: timing measurements (to be deleted).
use std::time::Instant;
use khala_parity::backend::postgres::{PostgresBackend, PostgresConfig};

#[tokio::test]
async fn timing() {
    let config = PostgresConfig::from_env().unwrap();
    let t = Instant::now();
    let backend = PostgresBackend::start(&config).await.unwrap();
    eprintln!("TIMING provider={} start_ms={}", backend.provider(), t.elapsed().as_millis());
    let mut v = vec![];
    for _ in 0..10 {
        let t = Instant::now();
        let c = backend.fresh_database().await.unwrap();
        v.push(t.elapsed().as_millis());
        drop(c);
    }
    eprintln!("TIMING fresh_ms={v:?}");
    let admin = sqlx::PgPool::connect(&backend.resources().admin_url).await.unwrap();
    for strategy in ["WAL_LOG", "FILE_COPY"] {
        let mut v = vec![];
        for i in 0..5 {
            let t = Instant::now();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE x_{strategy}_{i} TEMPLATE {} STRATEGY {strategy}", backend.resources().databases[0]))).execute(&admin).await.unwrap();
            v.push(t.elapsed().as_millis());
        }
        eprintln!("TIMING create_{strategy}_ms={v:?}");
    }
    let url = backend.resources().admin_url;
    for i in 0..3 {
        let t = Instant::now();
        let u = format!("{}/x_wal_log_{i}", url.rsplit_once('/').unwrap().0);
        let c = <sqlx::PgConnection as sqlx::Connection>::connect(&u).await.unwrap();
        let a = t.elapsed().as_millis();
        drop(c);
        let t = Instant::now();
        let c = <sqlx::PgConnection as sqlx::Connection>::connect(&u).await.unwrap();
        eprintln!("TIMING connect_new_db_first_ms={a} second_ms={}", t.elapsed().as_millis());
        drop(c);
    }
    admin.close().await;
    let t = Instant::now();
    backend.shutdown().await.unwrap();
    eprintln!("TIMING shutdown_ms={}", t.elapsed().as_millis());
}
