// The Vercel AI SDK against a running gateway, as an app would use it. Run by
// tests/integration/test_client_libraries.py with BASE_URL, API_KEY, GPT_MODEL and CLAUDE_MODEL set;
// prints one JSON object of what each provider/model pair answered.
//
// GPT goes through the OpenAI provider's default, `openai(model)` (the Responses API); Claude
// through `openai.chat(model)` (the gateway serves the Responses API for OpenAI models only).
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { Output, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const { BASE_URL, API_KEY, GPT_MODEL, CLAUDE_MODEL } = process.env;
const openai = createOpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY });
const anthropic = createAnthropic({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY });

const Weather = z.object({ city: z.string(), temperatureC: z.number(), conditions: z.array(z.string()) });
const weatherTool = tool({
  description: "Current weather in a city",
  inputSchema: z.object({ city: z.string() }),
  strict: true,
  execute: async ({ city }) => ({ city, temperatureC: 4 }),
});

const pairs = {
  gpt: openai(GPT_MODEL),
  claude_via_chat: openai.chat(CLAUDE_MODEL),
  claude: anthropic(CLAUDE_MODEL),
  gpt_via_messages: anthropic(GPT_MODEL),
};

const results = {};
for (const [name, model] of Object.entries(pairs)) {
  const text = await generateText({ model, prompt: `hello from ${name}` });
  const structured = await generateText({
    model,
    prompt: "Weather in Oslo?",
    output: Output.object({ schema: Weather }),
  });
  let streamed = "";
  const stream = streamText({ model, prompt: `stream for ${name}` });
  for await (const piece of stream.textStream) streamed += piece;
  const withTools = await generateText({
    model,
    prompt: "What is the weather in Oslo? weather",
    tools: { weather: weatherTool },
    stopWhen: stepCountIs(2),
  });
  results[name] = {
    text: text.text,
    usage: { input: text.usage.inputTokens, output: text.usage.outputTokens },
    structured: structured.output,
    streamed,
    toolCalls: withTools.steps.flatMap((step) => step.toolCalls.map((c) => ({ name: c.toolName, input: c.input }))),
    finalText: withTools.text,
  };
}
console.log(JSON.stringify(results));
