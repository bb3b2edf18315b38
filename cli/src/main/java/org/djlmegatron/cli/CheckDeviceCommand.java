package org.djlmegatron.cli;

import java.util.List;
import java.util.concurrent.Callable;
import org.djlmegatron.check.DeviceChecks;
import org.djlmegatron.comm.RankDevices;
import org.djlmegatron.engine.TorchNative;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code check-device}: {@link DeviceChecks} on one device; exit status 1 when any check fails. */
@Command(name = "check-device", mixinStandardHelpOptions = true,
        description = "Check a device end to end (needs the native library): fused attention vs composed, bf16 vs fp32.")
final class CheckDeviceCommand implements Callable<Integer> {

    @Option(names = "--device", defaultValue = "auto", description = "auto, cpu or cuda (default: ${DEFAULT-VALUE})")
    String device;

    @Override
    public Integer call() {
        if (!TorchNative.isAvailable()) {
            throw new IllegalStateException("check-device needs the djl-megatron native library (bf16, fused attention); "
                    + "see docs/native.md");
        }
        System.out.println("native library: " + TorchNative.version());
        List<DeviceChecks.Check> checks = DeviceChecks.run(RankDevices.parse(device, 1));
        checks.forEach(System.out::println);
        long failed = checks.stream().filter(c -> !c.passed()).count();
        System.out.println(failed == 0 ? "all checks passed" : failed + " check(s) FAILED");
        return failed == 0 ? 0 : 1;
    }
}
