// A Node.js function run by the official aws-lambda-ric (runtime: nodejs20.x).
import { appendFileSync } from "node:fs";

console.log("node init", process.pid);
let calls = 0;

export const handler = async (event, context) => {
  calls += 1;
  if (event.print) console.log(event.print);
  if (event.alloc_mb) globalThis.hog = Buffer.alloc(event.alloc_mb * 1024 * 1024, 1);
  if (event.sleep) await new Promise((resolve) => setTimeout(resolve, event.sleep * 1000));
  if (event.crash !== undefined) process.exit(event.crash);
  if (event.raise) {
    class BadInput extends Error {}
    BadInput.prototype.name = "BadInput";
    throw new BadInput(event.raise);
  }
  if (event.big) return "x".repeat(event.big);
  if (event.env) {
    const out = Object.fromEntries(event.env.map((k) => [k, process.env[k] ?? null]));
    return { ...out, cwd: process.cwd(), remaining: context.getRemainingTimeInMillis() };
  }
  return {
    echo: event.echo ?? null,
    pid: process.pid,
    calls,
    requestId: context.awsRequestId,
    arn: context.invokedFunctionArn,
    clientContext: context.clientContext ?? null,
  };
};

// An SQS consumer with partial batch responses: records whose body says "bad" fail.
// Each record is a line in $LEDGER: {body, ok, receives, batch}.
export const sqs = async (event, context) => {
  const lines = event.Records.map((r) => ({
    body: r.body,
    ok: !r.body.includes("bad"),
    receives: Number(r.attributes.ApproximateReceiveCount),
    batch: context.awsRequestId,
  }));
  appendFileSync(process.env.LEDGER, lines.map((l) => JSON.stringify(l) + "\n").join(""));
  const failures = event.Records.filter((r) => r.body.includes("bad")).map((r) => ({
    itemIdentifier: r.messageId,
  }));
  return { batchItemFailures: failures };
};

// A function URL handler, returning API Gateway v2's shape.
export const http = async (event) => ({
  statusCode: 201,
  headers: { "x-runtime": "node" },
  body: JSON.stringify({ path: event.rawPath, method: event.requestContext.http.method }),
});

// Response streaming with the HTTP integration prelude (status, headers), then the body.
export const stream = awslambda.streamifyResponse(async (event, responseStream) => {
  const out = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 202,
    headers: { "x-streamed": "yes" },
  });
  out.write("hello ");
  await new Promise((resolve) => setTimeout(resolve, 10));
  out.write("world");
  out.end();
});

// A streaming handler that fails after writing: the error travels in the trailers.
export const streamfail = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write("partial");
  throw new TypeError("stream broke");
});
