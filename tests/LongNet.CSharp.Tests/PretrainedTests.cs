using System;
using System.IO;
using System.Linq;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace LongNet.CSharp.Tests;

/// <summary>Hugging Face folders from C#: a Llama-layout model saved with SavePretrained imports with FromPretrained and gives the same logits; bad folders are refused.</summary>
public sealed class PretrainedTests
{
    public PretrainedTests() => LongNetRuntime.EnsureLoaded();

    [Fact]
    public void SavePretrained_then_FromPretrained_gives_the_same_logits()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"longnet-cs-pretrained-{Guid.NewGuid():N}");
        try
        {
            using var scope = NewDisposeScope();
            using var model = LongNetModel.Create().Vocabulary(29).Embedding(16).Layers(2).Heads(4).KeyValueHeads(2)
                .FeedForward(24, FeedForwardKind.SwiGlu).RmsNorm().DenseAttention().TiedEmbeddings(false).Seed(3).Build();
            model.SavePretrained(folder);
            Assert.True(File.Exists(Path.Combine(folder, "config.json")));
            Assert.True(File.Exists(Path.Combine(folder, "model.safetensors")));

            using var imported = LongNetModel.FromPretrained(folder);
            Assert.Null(imported.Tokenizer);
            var ids = randint(29, [2, 11]);
            using var noGrad = no_grad();
            var difference = (model.Forward(ids) - imported.Forward(ids)).abs().max().item<float>();
            Assert.True(difference < 1e-5f, $"logits differ by {difference}");
        }
        finally
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, true);
            }
        }
    }

    [Fact]
    public void A_model_with_Lora_adapters_starts_as_the_model_without_them_and_exports_merged()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"longnet-cs-lora-{Guid.NewGuid():N}");
        try
        {
            using var scope = NewDisposeScope();
            LongNetModelBuilder Llama() => LongNetModel.Create().Vocabulary(29).Embedding(16).Layers(2).Heads(4)
                .FeedForward(24, FeedForwardKind.SwiGlu).RmsNorm().DenseAttention().Seed(4);
            using var adapted = Llama().Lora(4, 8.0, LoraProjection.Query, LoraProjection.Output).Build();
            using var plain = Llama().Build();
            var ids = randint(29, [2, 11]);
            using var noGrad = no_grad();

            // the plain model's weights in the adapted one: with B = 0 it computes the plain model exactly
            var plainWeights = plain.Module.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, parameter) in adapted.Module.named_parameters())
            {
                if (plainWeights.TryGetValue(name, out var weight))
                {
                    parameter.copy_(weight);
                }
            }

            Assert.Equal(0f, (adapted.Forward(ids) - plain.Forward(ids)).abs().max().item<float>());

            // B ≠ 0: the adapters change the model, and the export merges them
            foreach (var (name, parameter) in adapted.Module.named_parameters())
            {
                if (name.EndsWith("_lora_b", StringComparison.Ordinal))
                {
                    parameter.copy_(randn(parameter.shape) * 0.05f);
                }
            }

            Assert.True((adapted.Forward(ids) - plain.Forward(ids)).abs().max().item<float>() > 1e-3f);
            adapted.SavePretrained(folder);
            using var imported = LongNetModel.FromPretrained(folder);
            var merged = (adapted.Forward(ids) - imported.Forward(ids)).abs().max().item<float>();
            Assert.True(merged < 1e-4f, $"the exported folder's logits differ by {merged}");
            Assert.True(adapted.ParameterCount > plain.ParameterCount);
            Assert.Throws<ArgumentOutOfRangeException>(() => Llama().Lora(0, 8.0));
            Assert.Throws<ArgumentOutOfRangeException>(() => Llama().Lora(2, double.NaN));
            Assert.ThrowsAny<ArgumentException>(() => Llama().Lora(17, 8.0).Build());
        }
        finally
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, true);
            }
        }
    }

    [Fact]
    public void Bad_folders_and_layouts_are_refused()
    {
        Assert.Throws<ArgumentException>(() => LongNetModel.FromPretrained(""));
        Assert.Throws<DirectoryNotFoundException>(() => LongNetModel.FromPretrained(Path.Combine(Path.GetTempPath(), $"missing-{Guid.NewGuid():N}")));
        var folder = Directory.CreateTempSubdirectory("longnet-cs-empty").FullName;
        try
        {
            Assert.Throws<InvalidDataException>(() => LongNetModel.FromPretrained(folder));
            using var layerNormModel = LongNetModel.Create().Vocabulary(29).Embedding(16).Layers(1).Heads(4).Build();
            var e = Assert.Throws<InvalidOperationException>(() => layerNormModel.SavePretrained(folder));
            Assert.Contains("norm", e.Message, StringComparison.Ordinal);
            Assert.Throws<ArgumentOutOfRangeException>(() => layerNormModel.SavePretrained(folder, ScalarType.Float64));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }
}
