// The Vercel AI SDK (`ai` + `@ai-sdk/openai`), unmodified, against orinari:
// generateText with a tool (the fake upstream really calls it; the SDK runs
// it and sends the result back), streamText, and the embedded model's tool
// calls and generateObject (constrained decoding: the object always parses).
//
// Usage: node ai_sdk_client.mjs http://HOST:PORT/v1
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const baseURL = process.argv[2] ?? "http://127.0.0.1:8080/v1";
const provider = createOpenAI({ baseURL, apiKey: "unused" });
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    console.log(`ai-sdk: ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`ai-sdk: FAIL ${name}: ${e?.stack ?? e}`);
  }
}

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

const weather = tool({
  description: "The weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `Sunny in ${city}`,
});

await check("generateText with a tool (OpenAI upstream)", async () => {
  const calls = [];
  const r = await generateText({
    model: provider.chat("fake-gpt"),
    prompt: "What is the weather in Paris?",
    tools: { get_weather: weather },
    stopWhen: stepCountIs(3),
    onStepFinish: (step) => calls.push(...step.toolCalls),
  });
  expect(calls.length === 1 && calls[0].toolName === "get_weather", JSON.stringify(calls));
  expect(calls[0].input.city === "fake", JSON.stringify(calls[0].input));
  expect(r.steps.length === 2 && r.finishReason === "stop", `${r.steps.length} ${r.finishReason}`);
  expect(r.text.length > 0, "no final text");
});

await check("streamText (embedded model)", async () => {
  const r = streamText({ model: provider.chat("orinari-small"), prompt: "Say hello.", maxOutputTokens: 12 });
  let text = "";
  for await (const piece of r.textStream) text += piece;
  expect(text.length > 0, "no text streamed");
  const usage = await r.usage;
  expect(usage.outputTokens > 0, JSON.stringify(usage));
});

await check("generateText with a tool (embedded model)", async () => {
  const r = await generateText({
    model: provider.chat("orinari-small"),
    prompt: "What is the weather in Paris?",
    tools: { get_weather: weather },
    toolChoice: "required",
    maxOutputTokens: 200,
    temperature: 0,
    stopWhen: stepCountIs(1),
  });
  expect(r.toolCalls.length >= 1 && r.toolCalls[0].toolName === "get_weather", JSON.stringify(r.toolCalls));
  expect(typeof r.toolCalls[0].input.city === "string", JSON.stringify(r.toolCalls[0].input));
  expect(r.toolResults.length === r.toolCalls.length, JSON.stringify(r.toolResults));
  expect(r.finishReason === "tool-calls", r.finishReason);
});

await check("generateObject (embedded model)", async () => {
  const { object } = await generateObject({
    model: provider.chat("orinari-small"),
    schema: z.object({ city: z.string().max(40), sunny: z.boolean(), celsius: z.number().int() }),
    prompt: "The weather in Paris today.",
    maxOutputTokens: 200,
    temperature: 0,
  });
  expect(typeof object.city === "string" && typeof object.sunny === "boolean", JSON.stringify(object));
  expect(Number.isInteger(object.celsius), JSON.stringify(object));
});

await check("streamText with a tool call (Anthropic upstream)", async () => {
  const r = streamText({
    model: provider.chat("fake-claude"),
    prompt: "Weather?",
    tools: { get_weather: weather },
    toolChoice: "required",
  });
  for await (const _ of r.textStream) {
    // drain
  }
  const calls = await r.toolCalls;
  expect(calls.length === 1 && calls[0].input.city === "fake", JSON.stringify(calls));
  expect((await r.finishReason) === "tool-calls", await r.finishReason);
});

process.exit(failed === 0 ? 0 : 1);
