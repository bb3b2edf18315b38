package org.djlmegatron.engine;

import ai.djl.pytorch.jni.JniUtils;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;

/** Base of the tests that record autograd: libtorch's grad mode on during each test, as it was after. */
public abstract class GradModeTestBase extends ArrayTestBase {

    private boolean gradMode;

    @BeforeEach
    protected void gradModeOn() {
        gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(true);
    }

    @AfterEach
    protected void gradModeRestored() {
        JniUtils.setGradMode(gradMode);
    }
}
