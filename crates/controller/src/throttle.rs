//! Client-side API rate limiting (`--kube-api-qps`, `--kube-api-burst`), a token bucket in front
//! of the kube client so a burst of reconciles cannot flood the API server.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tower::{Layer, Service};

use crate::bucket::{Rate, TokenBucket};

/// Shared token bucket.
pub struct Bucket {
    rate: Rate,
    state: Mutex<TokenBucket>,
}

impl Bucket {
    /// `rate` requests per second sustained, `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Arc<Self> {
        // Never zero: a zero rate would wait forever (the caller disables the limit instead).
        let rate = Rate::new(rate.max(0.001), burst);
        Arc::new(Self {
            rate,
            state: Mutex::new(TokenBucket::full(rate, Instant::now())),
        })
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let taken = self.state.lock().await.take(self.rate, Instant::now());
            match taken {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// The tower layer.
#[derive(Clone)]
pub struct ThrottleLayer(pub Arc<Bucket>);

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Throttle {
            inner,
            bucket: self.0.clone(),
            waiting: None,
            permitted: false,
        }
    }
}

/// The throttled service: not ready until it holds a token, as tower intends.
pub struct Throttle<S> {
    inner: S,
    bucket: Arc<Bucket>,
    waiting: Option<BoxFuture<'static, ()>>,
    permitted: bool,
}

impl<S, R> Service<R> for Throttle<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            let bucket = self.bucket.clone();
            let waiting = self
                .waiting
                .get_or_insert_with(|| Box::pin(async move { bucket.acquire().await }));
            std::task::ready!(waiting.as_mut().poll(cx));
            self.waiting = None;
            self.permitted = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.permitted = false;
        self.inner.call(request)
    }
}
